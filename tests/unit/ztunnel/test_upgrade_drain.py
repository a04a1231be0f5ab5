"""What a peer notices when a ztunnel drains (an upgrade, or SIGTERM), at the HBONE layer.

A draining server connection says GOAWAY with the last stream it took and still serves that stream to its
end; a stream the client sent while the GOAWAY was on its way is refused unprocessed (REFUSED_STREAM), which
the client's `open_stream` sends again ONCE on another connection, without the app's connection noticing.
Other refusals (a 503, a stream reset after it was taken) are never retried: the destination may have acted.
Both ends are real `HboneConnection`s over in-memory transports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.ztunnel.test_hbone_connection import App, FakeTransport, Server, until
from ztunnel.proxy.connect import StreamRefused, open_stream
from ztunnel.proxy.hbone import HboneConnection, StreamRefusedError
from ztunnel.proxy.relay import Side
from ztunnel.state.mesh import Upstream

pytestmark = pytest.mark.asyncio


def pump(client: HboneConnection, ct: FakeTransport, server: Server) -> None:
    """Carry bytes both ways until neither side has anything more to say."""
    for _ in range(20):
        up, down = ct.take(), b""
        if up:
            server.conn.data_received(up)
        down = server.transport.take()
        if down:
            client.data_received(down)
        if not up and not down:
            return
    raise AssertionError("the two ends kept talking")


def pair() -> tuple[HboneConnection, FakeTransport, Server]:
    server = Server()
    client = HboneConnection(client=True)
    ct = FakeTransport()
    client.connection_made(ct)  # type: ignore[arg-type]
    pump(client, ct, server)
    return client, ct, server


class Owner:
    """A tunnel stand-in: records what ended the stream it owns."""

    def __init__(self) -> None:
        self.lost: list[BaseException | None] = []

    def side_lost(self, side: Side, error: BaseException | None) -> None:
        self.lost.append(error)


async def test_a_drained_connection_serves_the_stream_it_took_and_refuses_the_one_sent_meanwhile() -> None:
    client, ct, server = pair()
    taken_owner, late_owner = Owner(), Owner()
    taken, taken_status = client.open("10.0.0.2:80", taken_owner, [])
    pump(client, ct, server)
    assert await taken_status == 200
    late, late_status = client.open("10.0.0.2:80", late_owner, [])  # on the wire while the server drains
    server.conn.drain()
    pump(client, ct, server)
    with pytest.raises(StreamRefusedError):
        await late_status
    assert late.closed and not client.usable  # new streams go to another connection
    assert not server.transport.closed  # the taken stream is still being served
    app = server.apps[taken.stream_id]
    taken.peer = App()
    taken.resume_reading()
    taken.write(b"request")
    await asyncio.sleep(0)  # writes are flushed once per turn of the loop
    pump(client, ct, server)
    assert app.data == b"request"
    taken.write_eof()
    server.conn.streams[taken.stream_id].write_eof()
    await asyncio.sleep(0)
    pump(client, ct, server)
    assert not server.transport.closed  # a grace for streams sent before the GOAWAY arrived
    await until(lambda: server.transport.closed)  # then closed, its last stream having ended
    assert taken_owner.lost == [None]  # ended cleanly, never reset


@dataclass
class FakeConn:
    """A pooled connection whose next CONNECT gets `answer`: a status, or an exception (as a reset would)."""

    answer: int | BaseException
    opened: list[Owner] = field(default_factory=list)

    def open(self, authority: str, owner: Any, headers: list[tuple[str, str]]) -> tuple[Any, asyncio.Future[int]]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        side = SimpleNamespace(owner=owner, closed=False, abort=lambda: None)
        if isinstance(self.answer, BaseException):
            fut.set_exception(self.answer)
            owner.side_lost(side, self.answer)  # as a reset stream reports its end
        else:
            fut.set_result(self.answer)
        self.opened.append(owner)
        return side, fut


class FakePool:
    def __init__(self, *conns: FakeConn) -> None:
        self.conns = list(conns)
        self.gets = 0

    async def get(self, key: object, netns_fd: int, tls: object) -> FakeConn:
        self.gets += 1
        return self.conns.pop(0)


def context(pool: FakePool) -> Any:
    async def certificate(identity: str) -> object:
        return object()

    return SimpleNamespace(
        identities=SimpleNamespace(certificate=certificate),
        pool=pool,
        tls=SimpleNamespace(client=lambda cert: None),
    )


POD = SimpleNamespace(identity="spiffe://cluster.local/ns/a/sa/x", netns_fd=-1)
UP = Upstream(ip="10.0.0.9", port=8080, workload=None)


async def test_a_stream_refused_unprocessed_is_sent_again_once_and_the_app_connection_never_notices() -> None:
    pool = FakePool(FakeConn(StreamRefusedError("refused by GOAWAY")), FakeConn(200))
    owner = Owner()
    side = await open_stream(context(pool), POD, "10.0.0.1", UP, "spiffe://cluster.local/ns/b/sa/y", owner)  # type: ignore[arg-type]
    assert pool.gets == 2 and side.owner is owner and owner.lost == []


async def test_a_second_refusal_fails_the_connection_and_is_reported_once() -> None:
    pool = FakePool(FakeConn(StreamRefusedError("a")), FakeConn(StreamRefusedError("b")))
    owner = Owner()
    with pytest.raises(StreamRefusedError):
        await open_stream(context(pool), POD, "10.0.0.1", UP, "id", owner)  # type: ignore[arg-type]
    assert pool.gets == 2 and len(owner.lost) == 1


@pytest.mark.parametrize("answer", [503, ConnectionResetError("stream 1 reset by the peer")])
async def test_an_answer_or_a_reset_after_the_stream_was_taken_is_not_retried(answer: int | BaseException) -> None:
    pool = FakePool(FakeConn(answer), FakeConn(200))
    with pytest.raises((StreamRefused, ConnectionResetError)):
        await open_stream(context(pool), POD, "10.0.0.1", UP, "id", Owner())  # type: ignore[arg-type]
    assert pool.gets == 1
