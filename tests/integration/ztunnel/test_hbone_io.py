"""The node proxy's data path on real sockets: TCP in, HBONE (HTTP/2 CONNECT over mTLS 1.3) across,
TCP out to an app, all on loopback in one event loop.

What is checked is what the two apps at the ends notice: every byte arrives, in order, both ways;
a half-close is an end of stream and not an end of the connection; a refusal or a crash anywhere
resets only the connection it concerns; a slow reader slows the writer instead of filling ztunnel's
memory; and the client only talks to a server proving the identity it expects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from control.ca import CertificateAuthority
from tests.integration.ztunnel.loopback import (
    CLIENT_ID,
    CLIENT_IP,
    LOOPBACK,
    SERVER_ID,
    TD,
    App,
    Handler,
    LoopbackSockets,
    reset,
    wait_until,
    workload_certificate,
)
from tests.integration.ztunnel.served import CLIENT_POD, ServedNode, mesh
from ztunnel.hbone import H2Settings
from ztunnel.observe import accesslog
from ztunnel.proxy.limits import HboneLimits

pytestmark = pytest.mark.asyncio
MiB = 1 << 20
TEST_TIMEOUT = 60.0
StartApp = Callable[[Handler], Awaitable[App]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(64 * 1024):
        writer.write(data)
        await writer.drain()


async def exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    payload: bytes,
    before_reading: Callable[[], Awaitable[None]] | None = None,
) -> bytes:
    """Send `payload` and half-close while reading until the other end closes; what was read."""

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    async def receive() -> bytes:
        if before_reading is not None:
            await before_reading()
        return await reader.read()

    _, received = await asyncio.gather(send(), receive())
    return received


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tcp_totals(node: ServedNode) -> dict[str, float]:
    """The istio_tcp_* counters as Prometheus would scrape them, summed over label sets."""
    families = text_string_to_metric_families(node.metrics.render())
    return {
        f.name: sum(s.value for s in f.samples if s.name in (f.name, f"{f.name}_total"))
        for f in families
        if f.name.startswith("istio_tcp_")
    }


def flagged(node: ServedNode) -> dict[tuple[str, str, str], float]:
    """istio_tcp_connections_{opened,closed}_total with response_flags other than `-`, by
    (family, reporter, flags), as Prometheus would scrape them."""
    out: dict[tuple[str, str, str], float] = {}
    for f in text_string_to_metric_families(node.metrics.render()):
        if f.name in ("istio_tcp_connections_opened", "istio_tcp_connections_closed"):
            for sample in f.samples:
                if sample.labels["response_flags"] != "-":
                    key = (f.name.rsplit("_", 1)[1], sample.labels["reporter"], sample.labels["response_flags"])
                    out[key] = out.get(key, 0) + sample.value
    return out


def outbound_errors(node: ServedNode) -> dict[str, int]:
    """meshlet_connection_errors_total{direction="outbound"} by reason, those counted at all."""
    return {reason: n for (direction, reason), n in node.metrics.errors.items() if direction == "outbound" and n}


async def test_8_mib_each_way_through_one_tunnel_arrives_intact(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    # Twice the 4 MiB stream window each way. Each reader starts only once the stream towards it has
    # used up its window, so both directions stop and must be resumed by WINDOW_UPDATEs.
    assert H2Settings().initial_window_size < 8 * MiB
    to_app, to_client = os.urandom(8 * MiB), os.urandom(8 * MiB)
    seen_by_app: list[str] = []

    async def client_window_closed() -> None:
        await wait_until(source.send_window_closed, "the client's stream to use up its window")

    async def server_window_closed() -> None:
        await wait_until(destination.send_window_closed, "the server's stream to use up its window")

    async def app_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen_by_app.append(digest(await exchange(reader, writer, to_client, client_window_closed)))

    app = await apps(app_side)
    async with asyncio.timeout(TEST_TIMEOUT):
        async with source.captured(app.authority) as (reader, writer):
            received = await exchange(reader, writer, to_app, server_window_closed)
        # Our end is done once the app's bytes and EOF are in; the app may still be reading ours.
        await wait_until(lambda: seen_by_app, "the app to read to the end")
        await wait_until(lambda: not source.ctx.tunnels and not destination.ctx.tunnels, "both tunnels to finish")

    assert digest(received) == digest(to_client)
    assert seen_by_app == [digest(to_app)]
    # Each node reports the connection once, with its bytes, when it has closed.
    expected = {
        "istio_tcp_connections_opened": 1,
        "istio_tcp_connections_closed": 1,
        "istio_tcp_sent_bytes": 8 * MiB,
        "istio_tcp_received_bytes": 8 * MiB,
    }
    assert tcp_totals(source) == expected
    assert tcp_totals(destination) == expected


async def test_client_half_close_reaches_the_app_and_its_reply_still_arrives(
    source: ServedNode, apps: StartApp
) -> None:
    request, reply = os.urandom(100_000), os.urandom(1 * MiB)

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await reader.read()  # returns only once the client's half-close has arrived
        writer.write(digest(body).encode() + reply)
        await writer.drain()

    app = await apps(answer_after_eof)
    async with asyncio.timeout(TEST_TIMEOUT), source.captured(app.authority) as (reader, writer):
        writer.write(request)
        await writer.drain()
        writer.write_eof()
        received = await reader.read()

    assert received == digest(request).encode() + reply


async def test_app_half_close_reaches_the_client_which_can_still_send(source: ServedNode, apps: StartApp) -> None:
    greeting, upload = os.urandom(300_000), os.urandom(2 * MiB)
    uploaded: list[str] = []

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        writer.write_eof()
        uploaded.append(digest(await reader.read()))

    app = await apps(greet_then_listen)
    async with asyncio.timeout(TEST_TIMEOUT), source.captured(app.authority) as (reader, writer):
        assert await reader.read() == greeting  # EOF from the app, while our direction stays open
        writer.write(upload)
        await writer.drain()
        writer.write_eof()
        await wait_until(lambda: uploaded, "the app to receive the upload")

    assert uploaded == [digest(upload)]


async def test_bytes_and_eof_sent_before_the_tunnel_is_up_are_passed_on(source: ServedNode, apps: StartApp) -> None:
    # `printf ... | nc`: everything, end of stream included, arrives while the CONNECT is in flight.
    payload = os.urandom(3 * MiB)
    app = await apps(echo)
    async with asyncio.timeout(TEST_TIMEOUT), source.captured(app.authority) as (reader, writer):
        writer.write(payload)
        writer.write_eof()
        echoed = await reader.read()

    assert digest(echoed) == digest(payload)


async def test_50_concurrent_tunnels_share_one_hbone_connection_and_keep_their_own_bytes(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    count = 50
    all_connected = asyncio.Event()
    streams_when_all_connected: list[list[int]] = []

    async def echo_once_all_are_here(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Nothing is echoed until every tunnel reached the app, so all of them are open at once.
        if app.accepted == count:
            await wait_until(lambda: len(destination.ctx.tunnels) == count, "the last tunnel to be established")
            streams_when_all_connected.append([len(c.streams) for c in destination.hbone_connections()])
            all_connected.set()
        await all_connected.wait()
        await echo(reader, writer)

    app = await apps(echo_once_all_are_here)
    payloads = [os.urandom(256 * 1024) for _ in range(count)]

    async def one(payload: bytes) -> bytes:
        async with source.captured(app.authority) as (reader, writer):
            return await exchange(reader, writer, payload)

    async with asyncio.timeout(TEST_TIMEOUT):
        echoed = await asyncio.gather(*(one(p) for p in payloads))

    assert [digest(e) for e in echoed] == [digest(p) for p in payloads]
    assert streams_when_all_connected == [[count]]  # one server-side connection carried them all
    assert source.handshakes == 1 and len(source.pooled()) == 1


async def test_a_refused_stream_resets_only_its_own_connection(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    allowed, denied = await apps(echo), await apps(echo)
    destination.ctx.index = mesh(deny_ports=[denied.port])  # a DENY policy on the server pod

    async with asyncio.timeout(TEST_TIMEOUT), source.captured(allowed.authority) as (reader, writer):
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"

        async with source.captured(denied.authority) as (denied_reader, denied_writer):
            denied_writer.write(b"let me in")
            with pytest.raises(ConnectionResetError):  # a reset, never a clean EOF
                await denied_reader.read()

        writer.write(b"after")
        assert await reader.readexactly(5) == b"after"

    assert outbound_errors(source) == {"denied": 1}  # the server answered 401
    assert destination.errors("denied") == 1
    # As Istio's ztunnel reports it: the destination says the policy denied it, the source that it could not
    # connect; each counted as opened and closed (the closes once both ends are gone).
    await wait_until(lambda: len(flagged(source)) == 2 and len(flagged(destination)) == 2, "denial counted")
    assert flagged(destination) == {("opened", "destination", "DENY"): 1, ("closed", "destination", "DENY"): 1}
    assert flagged(source) == {("opened", "source", "CONNECT"): 1, ("closed", "source", "CONNECT"): 1}
    assert denied.accepted == 0
    [pooled] = source.pooled()
    assert source.handshakes == 1 and not pooled.lost


async def test_an_app_that_is_not_listening_resets_the_client(source: ServedNode, destination: ServedNode) -> None:
    with socket.socket() as nobody:
        nobody.bind((LOOPBACK, 0))  # held but never listening: connections to it are refused
        async with (
            asyncio.timeout(TEST_TIMEOUT),
            source.captured(f"{LOOPBACK}:{nobody.getsockname()[1]}") as (reader, writer),
        ):
            writer.write(b"anyone?")
            with pytest.raises(ConnectionResetError):
                await reader.read()

    assert outbound_errors(source) == {"hbone_503": 1}  # the server answered 503
    assert destination.errors("app_unreachable") == 1
    await wait_until(lambda: len(flagged(source)) == 2 and len(flagged(destination)) == 2, "failure counted")
    assert flagged(destination) == {("opened", "destination", "CONNECT"): 1, ("closed", "destination", "CONNECT"): 1}
    assert flagged(source) == {("opened", "source", "CONNECT"): 1, ("closed", "source", "CONNECT"): 1}


async def test_an_app_reset_resets_the_client_and_no_other_stream(source: ServedNode, apps: StartApp) -> None:
    async def crash_after_five_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        reset(writer)

    steady, crashing = await apps(echo), await apps(crash_after_five_bytes)

    async with asyncio.timeout(TEST_TIMEOUT), source.captured(steady.authority) as (reader, writer):
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"

        async with source.captured(crashing.authority) as (crash_reader, crash_writer):
            crash_writer.write(b"crash")
            with pytest.raises(ConnectionResetError):
                await crash_reader.read()

        writer.write(b"after")
        assert await reader.readexactly(5) == b"after"

    assert crashing.accepted == 1
    [pooled] = source.pooled()
    assert source.handshakes == 1 and not pooled.lost


async def test_a_slow_reader_holds_the_sender_back_instead_of_filling_ztunnel(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    total, chunk = 32 * MiB, 256 * 1024
    data = os.urandom(total)
    written = 0  # what the app's socket has taken so far

    async def send_everything(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        view = memoryview(data)
        for offset in range(0, total, chunk):
            writer.write(view[offset : offset + chunk])
            await writer.drain()  # blocks while the path to the reader is full
            written = offset + chunk

    app = await apps(send_everything)
    peak = 0

    def measure() -> None:
        nonlocal peak
        peak = max(peak, source.held() + destination.held())

    async def keep_measuring() -> None:
        while True:
            measure()
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(keep_measuring())
    try:
        async with asyncio.timeout(TEST_TIMEOUT), source.captured(app.authority) as (reader, _):
            # The client reads nothing until the sender has stopped making progress. A stall is no
            # event one could wait on, so it is recognised as `written` holding still for 250 ms.
            previous, still_since = -1, asyncio.get_running_loop().time()

            def stalled() -> bool:
                nonlocal previous, still_since
                now = asyncio.get_running_loop().time()
                if written != previous:
                    previous, still_since = written, now
                return written > 0 and now - still_since > 0.25

            await wait_until(stalled, "the sender to stall behind the reader that does not read")
            held_back_at = written
            measure()

            received = hashlib.sha256()
            got = 0
            while piece := await reader.read(64 * 1024):  # then a slow reader: 64 KiB a millisecond
                received.update(piece)
                got += len(piece)
                measure()
                await asyncio.sleep(0.001)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)

    assert held_back_at < total // 2, f"the app got {held_back_at / MiB:.1f} MiB written although nobody read"
    assert peak < 8 * MiB, f"ztunnel held {peak / MiB:.1f} MiB for a reader that was not reading"
    assert got == total and received.hexdigest() == digest(data)


async def test_each_side_sees_the_others_spiffe_identity(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    app = await apps(echo)
    async with asyncio.timeout(TEST_TIMEOUT), source.captured(app.authority) as (reader, writer):
        writer.write(b"who")
        assert await reader.readexactly(3) == b"who"
        [server_side] = destination.hbone_connections()

    [client_side] = source.pooled()
    assert client_side.peer_identity == SERVER_ID
    assert server_side.peer_identity == CLIENT_ID


async def test_a_server_certificate_from_another_ca_fails_the_handshake(
    ca: CertificateAuthority, sockets: LoopbackSockets, tmp_path: Path, apps: StartApp
) -> None:
    other_ca = CertificateAuthority.load_or_create(tmp_path, TD)  # same trust domain, different root
    impostor = await ServedNode(workload_certificate(other_ca, SERVER_ID), sockets=sockets).start()
    cert = workload_certificate(ca, CLIENT_ID)
    source = await ServedNode(cert, pod=CLIENT_POD, sockets=sockets).start()
    app = await apps(echo)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            assert source.ctx.pool is not None
            with pytest.raises(ssl.SSLCertVerificationError):  # the pool's own dial
                await source.ctx.pool.get((CLIENT_ID, CLIENT_IP, LOOPBACK, SERVER_ID), -1, source.ctx.tls.client(cert))

            async with source.captured(app.authority) as (reader, writer):
                writer.write(b"secret")
                with pytest.raises(ConnectionResetError):
                    await reader.read()
    finally:
        await source.close()
        await impostor.close()

    assert outbound_errors(source) == {"connect": 1}
    assert source.handshakes == 0 and app.accepted == 0


async def test_a_burst_above_the_peers_stream_limit_opens_more_connections_and_every_tunnel_works(
    ca: CertificateAuthority, sockets: LoopbackSockets, apps: StartApp
) -> None:
    # Callers that arrive together wait for one dial; each must find room on a connection for its stream
    # (the peer takes `limit` per connection) or wait for another one, never open a stream the peer refuses.
    limit, count = 10, 45
    limits = HboneLimits(max_streams_per_connection=limit)
    destination = await ServedNode(workload_certificate(ca, SERVER_ID), limits, sockets=sockets).start()
    source = await ServedNode(workload_certificate(ca, CLIENT_ID), pod=CLIENT_POD, sockets=sockets).start()
    all_connected = asyncio.Event()
    connections_when_all_connected: list[int] = []

    async def echo_once_all_are_here(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if app.accepted == count:  # so all tunnels are open at once: the burst needs ceil(45/10) connections
            await wait_until(lambda: len(destination.ctx.tunnels) == count, "the last tunnel to be established")
            connections_when_all_connected.append(len(destination.hbone_connections()))
            all_connected.set()
        async with asyncio.timeout(TEST_TIMEOUT):
            await all_connected.wait()
        await echo(reader, writer)

    app = await apps(echo_once_all_are_here)
    payloads = [os.urandom(64 * 1024) for _ in range(count)]
    try:

        async def one(payload: bytes) -> bytes:
            async with source.captured(app.authority) as (reader, writer):
                return await exchange(reader, writer, payload)

        async with asyncio.timeout(TEST_TIMEOUT):
            echoed = await asyncio.gather(*(one(p) for p in payloads))
    finally:
        await source.close()
        await destination.close()

    assert [digest(e) for e in echoed] == [digest(p) for p in payloads]
    assert outbound_errors(source) == {} and destination.errors("stream_limit") == 0
    assert source.handshakes == 5 and connections_when_all_connected == [5]


class _BrokenIndex:
    """A mesh index with a bug: any use of it raises."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"a bug reading index.{name}")


async def test_a_bug_routing_a_connection_resets_it_and_the_next_one_is_served(
    source: ServedNode, apps: StartApp
) -> None:
    app = await apps(echo)
    good_index, source.ctx.index = source.ctx.index, _BrokenIndex()  # type: ignore[assignment]
    async with asyncio.timeout(TEST_TIMEOUT):
        async with source.captured(app.authority) as (reader, writer):
            writer.write(b"hello")
            with pytest.raises(ConnectionResetError):
                await reader.read()
        source.ctx.index = good_index
        async with source.captured(app.authority) as (reader, writer):
            writer.write(b"again")
            assert await reader.readexactly(5) == b"again"

    assert outbound_errors(source) == {"internal": 1}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_with_the_access_log_on_each_end_of_each_connection_writes_a_json_line(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    allowed, denied = await apps(echo), await apps(echo)
    destination.ctx.index = mesh(deny_ports=[denied.port])
    collect = _Lines()
    logging.getLogger(accesslog.LOGGER).addHandler(collect)
    accesslog.ACCESS_LOG.set(True)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            async with source.captured(allowed.authority) as (reader, writer):
                writer.write(b"hello")
                assert await reader.readexactly(5) == b"hello"
            async with source.captured(denied.authority) as (reader, writer):
                with pytest.raises(ConnectionResetError):
                    await reader.read()
            await wait_until(lambda: len(collect.lines) == 4, "a line per connection on each node")
    finally:
        accesslog.ACCESS_LOG.set(False)
        logging.getLogger(accesslog.LOGGER).removeHandler(collect)

    entries = [json.loads(line) for line in collect.lines]
    seen = {(e["direction"], e["response_flags"], e.get("failure", "")) for e in entries}
    assert seen == {("outbound", "-", ""), ("inbound", "-", ""), ("outbound", "CONNECT", "denied"),
                    ("inbound", "DENY", "denied")}  # fmt: skip
    relayed = next(e for e in entries if e["direction"] == "inbound" and not e.get("failure"))
    assert (relayed["bytes_received"], relayed["bytes_sent"]) == (5, 5)
    assert relayed["source_principal"] == CLIENT_ID and relayed["destination_principal"] == SERVER_ID
