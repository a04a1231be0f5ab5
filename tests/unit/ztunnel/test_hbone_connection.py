"""The HBONE connection driver (`ztunnel.proxy.hbone.HboneConnection`) over an in-memory transport.

What is checked is what the peer and the operator notice: a bug while handling one stream resets that
stream and no other, even within the same read; a peer breaking HTTP/2 gets GOAWAY and is counted; a
server connection without a preface, or without streams for too long, is closed; refusals are counted
every time but logged once per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from hpack import Encoder

from ztunnel.hbone import (
    ConnectionTerminated,
    ErrorCode,
    Event,
    H2Connection,
    H2Settings,
    ResponseReceived,
    StreamReset,
)
from ztunnel.hbone import frames as fr
from ztunnel.metrics import Metrics
from ztunnel.proxy.hbone import HboneConnection
from ztunnel.proxy.relay import Tunnel

pytestmark = pytest.mark.asyncio


class FakeTransport:
    """What `HboneConnection` writes, kept for the test to hand to the other end."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, buffers: list[bytes]) -> None:
        for b in buffers:
            self.written += b

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


class App:
    """The other side of a tunnel: records what the stream hands it; `broken` makes its writes raise."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.data = b""
        self.aborted = False
        self.closed = False
        self.received = 0
        self.eof_in = self.eof_out = False

    def write(self, data: bytes | memoryview) -> None:
        if self.broken:
            raise RuntimeError("a bug while writing to the app")
        self.data += bytes(data)

    def write_eof(self) -> None:
        self.eof_out = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = self.closed = True

    def close(self) -> None:
        self.closed = True


class Server:
    """A server `HboneConnection` whose requests open tunnels to `App`s (or raise, for port 666)."""

    def __init__(
        self,
        settings: H2Settings | None = None,
        preface_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.metrics = Metrics()
        self.apps: dict[int, App] = {}
        self.conn = HboneConnection(
            client=False,
            on_request=self._request,
            settings=settings,
            metrics=self.metrics,
            preface_timeout=preface_timeout,
            idle_timeout=idle_timeout,
        )
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]

    def _request(self, conn: HboneConnection, ev: object) -> None:
        stream_id, authority = ev.stream_id, ev.authority  # type: ignore[attr-defined]
        if authority.endswith(":666"):
            raise RuntimeError("a bug in the request handler")
        tunnel = Tunnel("inbound", self.metrics, set(), authority)
        side = conn.accept(stream_id, tunnel)
        app = self.apps[stream_id] = App(broken=authority.endswith(":667"))
        tunnel.downstream = side
        tunnel.established(app)
        conn.respond(stream_id, 200)


def exchange(client: H2Connection, server: Server) -> list[Event]:
    """The client's bytes to the server in one read, and the server's answer back: the client's events."""
    server.conn.data_received(client.data_to_send())
    return client.receive_data(server.transport.take())


def outcome(events: list[Event]) -> dict[int, object]:
    """Per stream: the response status, or the reset's error code."""
    out: dict[int, object] = {}
    for e in events:
        if isinstance(e, ResponseReceived):
            out[e.stream_id] = e.status
        elif isinstance(e, StreamReset):
            out[e.stream_id] = ErrorCode(e.error_code)
    return out


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition()` holds (at most 5 s)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


def errors(server: Server) -> dict[str, int]:
    return {reason: n for (direction, reason), n in server.metrics.errors.items() if direction == "inbound"}


async def test_a_bug_handling_one_request_resets_that_stream_and_the_others_in_the_same_read_are_served() -> None:
    server, client = Server(), H2Connection(client=True)
    a = client.open_stream("10.0.0.2:80")
    bad = client.open_stream("10.0.0.2:666")
    b = client.open_stream("10.0.0.2:81")

    events = exchange(client, server)

    assert outcome(events) == {a: 200, bad: ErrorCode.INTERNAL_ERROR, b: 200}
    assert not server.transport.closed and not server.transport.aborted and not server.conn.lost
    assert errors(server) == {"internal": 1}
    client.send_data(b, b"still here")
    exchange(client, server)
    assert server.apps[b].data == b"still here"


async def test_a_bug_delivering_one_streams_data_resets_its_tunnel_and_the_other_stream_gets_its_bytes() -> None:
    server, client = Server(), H2Connection(client=True)
    broken = client.open_stream("10.0.0.2:667")
    fine = client.open_stream("10.0.0.2:80")
    exchange(client, server)
    client.send_data(broken, b"boom")
    client.send_data(fine, b"hello")

    events = exchange(client, server)  # both DATA frames in one read, the broken one first

    assert outcome(events) == {broken: ErrorCode.INTERNAL_ERROR}
    assert server.apps[fine].data == b"hello"
    assert server.apps[broken].aborted  # the app's connection is reset, not left open
    assert list(server.conn.streams) == [fine]
    assert errors(server) == {"internal": 1}
    # The connection window stays whole: the broken stream's bytes were given back too.
    client.send_data(fine, b" again")
    exchange(client, server)
    assert server.apps[fine].data == b"hello again"


async def test_a_peer_breaking_http2_gets_goaway_and_is_counted_by_error_code() -> None:
    server, client = Server(), H2Connection(client=True)
    exchange(client, server)
    server.conn.data_received(fr.data_header(0, 2) + b"no")  # DATA on stream 0

    frames = fr.FrameReader(fr.MAX_MAX_FRAME_SIZE, expect_preface=False).feed(server.transport.take())
    goaways = [fr.parse_goaway(p) for t, _, _, p in frames if t == fr.GOAWAY]
    assert [code for _, code, _ in goaways] == [ErrorCode.PROTOCOL_ERROR]
    assert server.transport.closed
    assert errors(server) == {"h2_protocol_error": 1}


async def test_streams_over_the_connection_limit_are_each_counted_but_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, client = Server(H2Settings(max_concurrent_streams=2)), H2Connection(client=True)
    exchange(client, server)
    # Written by hand: an H2Connection client would respect the limit, as a misbehaving peer does not.
    hpack = Encoder()
    request = [(":method", "CONNECT"), (":authority", "10.0.0.2:80")]
    raw = b"".join(b"".join(fr.headers_frames(sid, hpack.encode(request), 16384, False)) for sid in (1, 3, 5, 7, 9))
    with caplog.at_level(logging.DEBUG, logger="ztunnel.proxy.hbone"):
        server.conn.data_received(raw)

    assert errors(server) == {"stream_limit": 3}
    about_limit = [r for r in caplog.records if "stream_limit" in r.getMessage()]
    assert [r.levelno for r in about_limit] == [logging.INFO, logging.DEBUG, logging.DEBUG]


async def test_a_goaway_with_an_error_from_the_peer_is_counted() -> None:
    metrics = Metrics()
    client, transport = HboneConnection(client=True, metrics=metrics), FakeTransport()
    client.connection_made(transport)  # type: ignore[arg-type]
    server = H2Connection(client=False)
    server.receive_data(transport.take())
    server.close(ErrorCode.ENHANCE_YOUR_CALM, "too many connections")
    client.data_received(server.data_to_send())
    assert client.goaway and not client.usable
    assert dict(metrics.errors) == {("outbound", "h2_peer_enhance_your_calm"): 1}


async def test_a_server_connection_without_a_preface_is_aborted_after_the_timeout() -> None:
    server = Server(preface_timeout=0.05)
    await until(lambda: server.transport.aborted)
    assert errors(server) == {"preface_timeout": 1}


async def test_a_preface_in_time_keeps_the_connection() -> None:
    server, client = Server(preface_timeout=0.05), H2Connection(client=True)
    exchange(client, server)
    await asyncio.sleep(0.2)  # four timeouts: what would have ended it has passed
    assert not server.transport.aborted and not server.transport.closed
    assert errors(server) == {}


async def test_a_server_connection_without_streams_is_closed_with_goaway_after_the_idle_timeout() -> None:
    server, client = Server(idle_timeout=0.1), H2Connection(client=True)
    sid = client.open_stream("10.0.0.2:80")
    exchange(client, server)
    await asyncio.sleep(0.3)  # three idle timeouts with a stream open: it stays
    assert not server.transport.closed

    client.reset_stream(sid)
    exchange(client, server)
    await until(lambda: server.transport.closed)
    events = client.receive_data(server.transport.take())
    assert [e.error_code for e in events if isinstance(e, ConnectionTerminated)] == [ErrorCode.NO_ERROR]
    assert errors(server) == {}


async def test_waiters_for_the_peers_settings_are_released_when_they_arrive() -> None:
    client = HboneConnection(client=True)
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(client.settings_received())
    await asyncio.sleep(0)
    assert not waiter.done()
    known_before = client.settings_known
    client.data_received(fr.settings_frame([(fr.SETTINGS_MAX_CONCURRENT_STREAMS, 7)]))
    async with asyncio.timeout(5):
        await waiter
    assert (known_before, client.settings_known) == (False, True)
    assert client.h2.available_streams == 7
