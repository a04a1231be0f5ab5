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
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from control.ca import CertificateAuthority
from tests.integration.ztunnel.nodes import (
    CLIENT_ID,
    LOOPBACK,
    SERVER_ID,
    TD,
    App,
    DestinationNode,
    Handler,
    SourceNode,
    connect,
    held_by_ztunnel,
    reset,
    send_window_closed,
    wait_until,
    workload_certificate,
)
from ztunnel.hbone import H2Settings

pytestmark = pytest.mark.asyncio
MiB = 1 << 20
TEST_TIMEOUT = 60.0
StartApp = Callable[[Handler], Awaitable[App]]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("mesh-ca"), TD)


@pytest_asyncio.fixture
async def destination(ca: CertificateAuthority) -> AsyncIterator[DestinationNode]:
    node = await DestinationNode(workload_certificate(ca, SERVER_ID)).start()
    try:
        yield node
    finally:
        await node.close()


@pytest_asyncio.fixture
async def source(ca: CertificateAuthority, destination: DestinationNode) -> AsyncIterator[SourceNode]:
    node = SourceNode(workload_certificate(ca, CLIENT_ID), destination.port)
    try:
        yield node
    finally:
        await node.close()


@pytest_asyncio.fixture
async def apps() -> AsyncIterator[StartApp]:
    """Starts apps on loopback for a test; all of them are closed after it."""
    started: list[App] = []

    async def start(handler: Handler) -> App:
        app = await App(handler).start()
        started.append(app)
        return app

    try:
        yield start
    finally:
        for app in started:
            await app.close()
    assert [e for app in started for e in app.errors] == []


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


def tcp_totals(node: SourceNode | DestinationNode) -> dict[str, float]:
    """The istio_tcp_* counters as Prometheus would scrape them, summed over label sets."""
    families = text_string_to_metric_families(node.metrics.render())
    return {f.name: sum(s.value for s in f.samples) for f in families if f.name.startswith("istio_tcp_")}


async def test_8_mib_each_way_through_one_tunnel_arrives_intact(
    source: SourceNode, destination: DestinationNode, apps: StartApp
) -> None:
    # Twice the 4 MiB stream window each way. Each reader starts only once the stream towards it has
    # used up its window, so both directions stop and must be resumed by WINDOW_UPDATEs.
    assert H2Settings().initial_window_size < 8 * MiB
    to_app, to_client = os.urandom(8 * MiB), os.urandom(8 * MiB)
    seen_by_app: list[str] = []

    async def client_window_closed() -> None:
        await wait_until(lambda: send_window_closed(source), "the client's stream to use up its window")

    async def server_window_closed() -> None:
        await wait_until(lambda: send_window_closed(destination), "the server's stream to use up its window")

    async def app_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen_by_app.append(digest(await exchange(reader, writer, to_client, client_window_closed)))

    app = await apps(app_side)
    port = await source.listen(app.authority)
    async with asyncio.timeout(TEST_TIMEOUT):
        async with connect(port) as (reader, writer):
            received = await exchange(reader, writer, to_app, server_window_closed)
        # Our end is done once the app's bytes and EOF are in; the app may still be reading ours.
        await wait_until(lambda: seen_by_app, "the app to read to the end")
        await wait_until(lambda: not source.tunnels and not destination.tunnels, "both tunnels to finish")

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
    source: SourceNode, apps: StartApp
) -> None:
    request, reply = os.urandom(100_000), os.urandom(1 * MiB)

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await reader.read()  # returns only once the client's half-close has arrived
        writer.write(digest(body).encode() + reply)
        await writer.drain()

    app = await apps(answer_after_eof)
    port = await source.listen(app.authority)
    async with asyncio.timeout(TEST_TIMEOUT), connect(port) as (reader, writer):
        writer.write(request)
        await writer.drain()
        writer.write_eof()
        received = await reader.read()

    assert received == digest(request).encode() + reply


async def test_app_half_close_reaches_the_client_which_can_still_send(source: SourceNode, apps: StartApp) -> None:
    greeting, upload = os.urandom(300_000), os.urandom(2 * MiB)
    uploaded: list[str] = []

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        writer.write_eof()
        uploaded.append(digest(await reader.read()))

    app = await apps(greet_then_listen)
    port = await source.listen(app.authority)
    async with asyncio.timeout(TEST_TIMEOUT), connect(port) as (reader, writer):
        assert await reader.read() == greeting  # EOF from the app, while our direction stays open
        writer.write(upload)
        await writer.drain()
        writer.write_eof()
        await wait_until(lambda: uploaded, "the app to receive the upload")

    assert uploaded == [digest(upload)]


async def test_bytes_and_eof_sent_before_the_tunnel_is_up_are_passed_on(source: SourceNode, apps: StartApp) -> None:
    # `printf ... | nc`: everything, end of stream included, arrives while the CONNECT is in flight.
    payload = os.urandom(3 * MiB)
    app = await apps(echo)
    port = await source.listen(app.authority)
    async with asyncio.timeout(TEST_TIMEOUT), connect(port) as (reader, writer):
        writer.write(payload)
        writer.write_eof()
        echoed = await reader.read()

    assert digest(echoed) == digest(payload)


async def test_50_concurrent_tunnels_share_one_hbone_connection_and_keep_their_own_bytes(
    source: SourceNode, destination: DestinationNode, apps: StartApp
) -> None:
    count = 50
    all_connected = asyncio.Event()
    streams_when_all_connected: list[int] = []

    async def echo_once_all_are_here(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Nothing is echoed until every tunnel reached the app, so all of them are open at once.
        if app.accepted == count:
            streams_when_all_connected.append(len(destination.connections[0].streams))
            all_connected.set()
        await all_connected.wait()
        await echo(reader, writer)

    app = await apps(echo_once_all_are_here)
    port = await source.listen(app.authority)
    payloads = [os.urandom(256 * 1024) for _ in range(count)]

    async def one(payload: bytes) -> bytes:
        async with connect(port) as (reader, writer):
            return await exchange(reader, writer, payload)

    async with asyncio.timeout(TEST_TIMEOUT):
        echoed = await asyncio.gather(*(one(p) for p in payloads))

    assert [digest(e) for e in echoed] == [digest(p) for p in payloads]
    assert streams_when_all_connected == [count]
    assert source.pool.handshakes == 1
    assert len(source.connections) == 1 and len(destination.connections) == 1


async def test_a_refused_stream_resets_only_its_own_connection(
    source: SourceNode, destination: DestinationNode, apps: StartApp
) -> None:
    allowed, denied = await apps(echo), await apps(echo)
    destination.refused_ports.add(denied.port)
    allowed_port, denied_port = await source.listen(allowed.authority), await source.listen(denied.authority)

    async with asyncio.timeout(TEST_TIMEOUT), connect(allowed_port) as (reader, writer):
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"

        async with connect(denied_port) as (denied_reader, denied_writer):
            denied_writer.write(b"let me in")
            with pytest.raises(ConnectionResetError):  # a reset, never a clean EOF
                await denied_reader.read()

        writer.write(b"after")
        assert await reader.readexactly(5) == b"after"

    assert source.statuses == [401]
    assert denied.accepted == 0
    assert source.pool.handshakes == 1 and not source.connections[0].lost


async def test_an_app_that_is_not_listening_resets_the_client(source: SourceNode) -> None:
    with socket.socket() as nobody:
        nobody.bind((LOOPBACK, 0))  # held but never listening: connections to it are refused
        port = await source.listen(f"{LOOPBACK}:{nobody.getsockname()[1]}")
        async with asyncio.timeout(TEST_TIMEOUT), connect(port) as (reader, writer):
            writer.write(b"anyone?")
            with pytest.raises(ConnectionResetError):
                await reader.read()

    assert source.statuses == [503]


async def test_an_app_reset_resets_the_client_and_no_other_stream(source: SourceNode, apps: StartApp) -> None:
    async def crash_after_five_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        reset(writer)

    steady, crashing = await apps(echo), await apps(crash_after_five_bytes)
    steady_port, crashing_port = await source.listen(steady.authority), await source.listen(crashing.authority)

    async with asyncio.timeout(TEST_TIMEOUT), connect(steady_port) as (reader, writer):
        writer.write(b"before")
        assert await reader.readexactly(6) == b"before"

        async with connect(crashing_port) as (crash_reader, crash_writer):
            crash_writer.write(b"crash")
            with pytest.raises(ConnectionResetError):
                await crash_reader.read()

        writer.write(b"after")
        assert await reader.readexactly(5) == b"after"

    assert crashing.accepted == 1
    assert source.pool.handshakes == 1 and not source.connections[0].lost


async def test_a_slow_reader_holds_the_sender_back_instead_of_filling_ztunnel(
    source: SourceNode, destination: DestinationNode, apps: StartApp
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
    port = await source.listen(app.authority)
    peak = 0

    def measure() -> None:
        nonlocal peak
        peak = max(peak, held_by_ztunnel(source, destination))

    async def keep_measuring() -> None:
        while True:
            measure()
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(keep_measuring())
    try:
        async with asyncio.timeout(TEST_TIMEOUT), connect(port) as (reader, _):
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
    source: SourceNode, destination: DestinationNode, apps: StartApp
) -> None:
    app = await apps(echo)
    port = await source.listen(app.authority)
    async with asyncio.timeout(TEST_TIMEOUT), connect(port) as (reader, writer):
        writer.write(b"who")
        assert await reader.readexactly(3) == b"who"

    [client_side] = source.connections
    [server_side] = destination.connections
    assert client_side.peer_identity == SERVER_ID
    assert server_side.peer_identity == CLIENT_ID


async def test_a_server_certificate_from_another_ca_fails_the_handshake(
    ca: CertificateAuthority, tmp_path: Path, apps: StartApp
) -> None:
    other_ca = CertificateAuthority.load_or_create(tmp_path, TD)  # same trust domain, different root
    impostor = await DestinationNode(workload_certificate(other_ca, SERVER_ID)).start()
    source = SourceNode(workload_certificate(ca, CLIENT_ID), impostor.port)
    app = await apps(echo)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            with pytest.raises(ssl.SSLCertVerificationError):
                await source.dial()

            port = await source.listen(app.authority)
            async with connect(port) as (reader, writer):
                writer.write(b"secret")
                with pytest.raises(ConnectionResetError):
                    await reader.read()
    finally:
        await source.close()
        await impostor.close()

    assert [type(e) for e in source.errors] == [ssl.SSLCertVerificationError]
    assert not impostor.connections and app.accepted == 0


async def test_a_burst_above_the_peers_stream_limit_opens_more_connections_and_every_tunnel_works(
    ca: CertificateAuthority, apps: StartApp
) -> None:
    # Callers that arrive together wait for one dial; each must find room on a connection for its stream
    # (the peer takes `limit` per connection) or wait for another one, never open a stream the peer refuses.
    limit, count = 10, 45
    server_settings = H2Settings(max_concurrent_streams=limit)
    destination = await DestinationNode(workload_certificate(ca, SERVER_ID), server_settings).start()
    source = SourceNode(workload_certificate(ca, CLIENT_ID), destination.port)
    all_connected = asyncio.Event()

    async def echo_once_all_are_here(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if app.accepted == count:  # so all tunnels are open at once: the burst needs ceil(45/10) connections
            all_connected.set()
        async with asyncio.timeout(TEST_TIMEOUT):
            await all_connected.wait()
        await echo(reader, writer)

    app = await apps(echo_once_all_are_here)
    payloads = [os.urandom(64 * 1024) for _ in range(count)]
    try:
        port = await source.listen(app.authority)

        async def one(payload: bytes) -> bytes:
            async with connect(port) as (reader, writer):
                return await exchange(reader, writer, payload)

        async with asyncio.timeout(TEST_TIMEOUT):
            echoed = await asyncio.gather(*(one(p) for p in payloads))
    finally:
        await source.close()
        await destination.close()

    assert [digest(e) for e in echoed] == [digest(p) for p in payloads]
    assert source.errors == [] and source.statuses == []
    assert source.pool.handshakes == len(destination.connections) == 5
