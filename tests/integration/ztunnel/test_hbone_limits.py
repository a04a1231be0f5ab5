"""The node's 15008 under peers that take too much: streams per connection, connections and streams per
source identity and per source IP, connections that never speak HTTP/2 or stop using streams, and bugs.

Each runs the real inbound path (`served.ServedNode`) on loopback (no root needed). What is checked is
what clients and the operator notice: how many tunnels were opened to the app, what the greedy client was answered
(REFUSED_STREAM, GOAWAY, a closed connection), that another client is served all along, and the count of
each refusal in meshlet_connection_errors_total.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from control.ca import CertificateAuthority
from meshlet_contracts.zds import WorkloadInfo
from tests.integration.ztunnel.loopback import CLIENT_ID, SERVER_ID, TD, App, wait_until, workload_certificate
from tests.integration.ztunnel.served import RawHbone, ServedNode, connect_status, dial
from ztunnel.hbone import ErrorCode
from ztunnel.hbone import frames as fr
from ztunnel.identity.manager import WorkloadCertificate
from ztunnel.proxy.hbone import StreamRefusedError
from ztunnel.proxy.limits import HboneLimits

pytestmark = pytest.mark.asyncio
TEST_TIMEOUT = 60.0
OTHER_ID = "spiffe://cluster.local/ns/c/sa/other"
GREEDY_IP, OTHER_IP, THIRD_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
OTHER_POD = WorkloadInfo("other", "c", "other", ("127.0.0.5",))
"""A client pod of OTHER_ID on another node."""


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("mesh-ca"), TD)


@pytest.fixture(scope="module")
def greedy(ca: CertificateAuthority) -> WorkloadCertificate:
    return workload_certificate(ca, CLIENT_ID)


@pytest.fixture(scope="module")
def other(ca: CertificateAuthority) -> WorkloadCertificate:
    return workload_certificate(ca, OTHER_ID)


Start = Callable[..., Awaitable[ServedNode]]


@pytest_asyncio.fixture
async def served(ca: CertificateAuthority) -> AsyncIterator[Start]:
    """Starts the served node with the given limits; it, its app and every client are closed after the test."""
    started: list[Any] = []

    async def start(limits: HboneLimits | None = None) -> ServedNode:
        node = await ServedNode(workload_certificate(ca, SERVER_ID), limits).start()
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            await node.close()


@pytest_asyncio.fixture
async def app() -> AsyncIterator[App]:
    """The pod's app: holds every connection open until the test ends."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    app = await App(hold).start()
    try:
        yield app
    finally:
        await app.close()


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[list[Any]]:
    """Client connections (RawHbone or HboneConnection) to close after the test, before the node."""
    opened: list[Any] = []
    try:
        yield opened
    finally:
        for c in opened:
            if isinstance(c, RawHbone):
                await c.close()
            elif c.transport is not None:
                c.transport.abort()


async def echo_through(node: ServedNode, cert: WorkloadCertificate, echo_app: App) -> bytes:
    """Bytes sent by a well-behaved client (ztunnel's outbound path, another node's) and echoed back."""
    source = ServedNode(cert, pod=OTHER_POD, sockets=node.sockets)
    try:
        await source.start()
        async with source.captured(echo_app.authority) as (reader, writer):
            writer.write(b"still served")
            return await reader.readexactly(12)
    finally:
        await source.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def test_1000_streams_on_one_connection_get_100_tunnels_and_900_refusals_and_others_are_served(
    served: Start, app: App, clients: list[Any], greedy: WorkloadCertificate, other: WorkloadCertificate
) -> None:
    node = await served()
    echo_app = await App(echo).start()
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            raw = await RawHbone.connect(greedy, node.port, GREEDY_IP)
            clients.append(raw)
            raw.preface()
            raw.request(range(1, 2001, 2), app.authority)  # 1000 streams, ignoring the advertised limit
            await wait_until(lambda: raw.answered == 1000, "an answer to each of the 1000 streams")
            await wait_until(lambda: app.accepted == 100, "100 tunnels to reach the app")
            echoed = await echo_through(node, other, echo_app)
    finally:
        await echo_app.close()

    assert sorted(raw.statuses.values()) == [200] * 100
    assert sorted(raw.resets.values()) == [ErrorCode.REFUSED_STREAM] * 900
    assert app.accepted == 100
    assert not raw.closed and raw.goaways == []  # refusing streams is no reason to drop the connection
    assert echoed == b"still served"
    assert node.errors("stream_limit") == 900


async def test_streams_per_identity_and_per_ip_are_bounded_across_connections(
    served: Start, app: App, clients: list[Any], greedy: WorkloadCertificate, other: WorkloadCertificate
) -> None:
    node = await served(HboneLimits(max_streams_per_peer=150))
    async with asyncio.timeout(TEST_TIMEOUT):
        first, second = await dial(greedy, node.port, GREEDY_IP), await dial(greedy, node.port, OTHER_IP)
        clients += [first, second]
        statuses = await asyncio.gather(
            *(connect_status(conn, app.authority) for conn in (first, second) for _ in range(100)),
            return_exceptions=True,
        )
        # The greedy IP holds 100 of them: another identity from there gets the 50 left to the IP, no more.
        same_ip = await dial(other, node.port, GREEDY_IP)
        clients.append(same_ip)
        from_same_ip = await asyncio.gather(
            *(connect_status(same_ip, app.authority) for _ in range(51)), return_exceptions=True
        )
        own_ip = await dial(other, node.port, THIRD_IP)
        clients.append(own_ip)
        served_status = await connect_status(own_ip, app.authority)

    assert statuses.count(200) == 150
    assert [type(s) for s in statuses if s != 200] == [StreamRefusedError] * 50  # RST_STREAM REFUSED_STREAM
    assert from_same_ip.count(200) == 50
    assert [type(s) for s in from_same_ip if s != 200] == [StreamRefusedError]
    assert served_status == 200
    assert app.accepted == 201
    assert node.errors("peer_stream_limit") == 51


async def test_connections_per_identity_and_per_ip_are_bounded_and_a_closed_one_makes_room(
    served: Start, app: App, clients: list[Any], greedy: WorkloadCertificate, other: WorkloadCertificate
) -> None:
    node = await served(HboneLimits(max_connections_per_peer=2))
    async with asyncio.timeout(TEST_TIMEOUT):
        kept = [await dial(greedy, node.port, GREEDY_IP), await dial(greedy, node.port, GREEDY_IP)]
        clients += kept
        for conn in kept:
            assert await connect_status(conn, app.authority) == 200
        over_identity = await RawHbone.connect(greedy, node.port, THIRD_IP)  # the identity has 2 open
        over_ip = await RawHbone.connect(other, node.port, GREEDY_IP)  # and so has the address
        clients += [over_identity, over_ip]
        for raw in (over_identity, over_ip):
            raw.preface()
            await wait_until(lambda raw=raw: raw.closed, "the connection over the limit to be closed")  # type: ignore[misc]
        fine = await dial(other, node.port, THIRD_IP)
        clients.append(fine)
        assert await connect_status(fine, app.authority) == 200

        kept[0].transport.abort()  # type: ignore[union-attr]
        await wait_until(lambda: node.ctx.peer_load.connections.by_identity.get(CLIENT_ID) == 1, "a slot to free")
        again = await dial(greedy, node.port, THIRD_IP)
        clients.append(again)
        assert await connect_status(again, app.authority) == 200

    assert over_identity.goaways == over_ip.goaways == [ErrorCode.ENHANCE_YOUR_CALM]
    assert node.errors("peer_connection_limit") == 2


async def test_a_tls_connection_that_never_sends_the_http2_preface_is_closed_after_the_timeout(
    served: Start, clients: list[Any], greedy: WorkloadCertificate
) -> None:
    node = await served(HboneLimits(preface_timeout=0.5))
    async with asyncio.timeout(TEST_TIMEOUT):
        silent = await RawHbone.connect(greedy, node.port, GREEDY_IP)
        clients.append(silent)
        await wait_until(lambda: silent.closed, "the silent connection to be closed", timeout=5)

    assert node.errors("preface_timeout") == 1
    assert node.ctx.peer_load.connections.by_identity == {}  # its slot is free again


async def test_a_connection_without_streams_gets_goaway_after_the_idle_timeout(
    served: Start, app: App, clients: list[Any], greedy: WorkloadCertificate
) -> None:
    node = await served(HboneLimits(idle_timeout=0.5))
    async with asyncio.timeout(TEST_TIMEOUT):
        conn = await dial(greedy, node.port, GREEDY_IP)
        clients.append(conn)
        assert await connect_status(conn, app.authority) == 200
        [side] = conn.streams.values()
        await asyncio.sleep(1.5)  # three idle timeouts pass with the stream open: the connection stays
        assert not conn.goaway and not conn.lost
        side.abort()
        await wait_until(lambda: conn.goaway and conn.lost, "GOAWAY and the end of the idle connection", timeout=5)

    assert node.errors("preface_timeout") == 0


async def test_a_peer_breaking_http2_gets_goaway_protocol_error_and_is_counted(
    served: Start, clients: list[Any], greedy: WorkloadCertificate
) -> None:
    node = await served()
    async with asyncio.timeout(TEST_TIMEOUT):
        raw = await RawHbone.connect(greedy, node.port, GREEDY_IP)
        clients.append(raw)
        raw.preface()
        raw.send(fr.data_header(0, 2) + b"no")  # DATA on stream 0
        await wait_until(lambda: raw.closed, "the broken connection to be closed")

    assert raw.goaways == [ErrorCode.PROTOCOL_ERROR]
    assert node.errors("h2_protocol_error") == 1


class _BrokenIndex:
    """A mesh index with a bug: any use of it raises."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"a bug reading index.{name}")


async def test_a_bug_serving_a_stream_answers_503_and_the_connection_serves_the_next(
    served: Start, app: App, clients: list[Any], greedy: WorkloadCertificate
) -> None:
    node = await served()
    async with asyncio.timeout(TEST_TIMEOUT):
        conn = await dial(greedy, node.port, GREEDY_IP)
        clients.append(conn)
        good_index, node.ctx.index = node.ctx.index, _BrokenIndex()  # type: ignore[assignment]
        status = await connect_status(conn, app.authority)
        node.ctx.index = good_index
        after = await connect_status(conn, app.authority)

    assert status == 503
    assert after == 200 and not conn.lost
    assert node.errors("internal") == 1
    assert app.accepted == 1
