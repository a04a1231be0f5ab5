"""The HTTP/1 proxy session at the edges of RFC 9110/9112, on loopback: HTTP/1.0 clients, `Connection: close`
either way, bodiless responses, 1xx, trailers, re-framing, pipelined bodies, upstream failures (reset,
silence, a kept-alive connection closed under a request), clients that leave mid-upload, smuggling shapes,
hop-by-hop headers, and what each request is recorded as.

Responses the sample app cannot produce come from `raw_upstream`, a server that writes canned bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import until
from tests.integration.ztunnel.test_http_session import app_port, proxy, raw_exchange
from ztunnel.l7.channel import Channel
from ztunnel.l7.exchange import Exchange, Limits, Reply, Untried, Upstream
from ztunnel.l7.session import Session

pytestmark = pytest.mark.asyncio
__all__ = ["app_port"]  # the fixture, shared with test_http_session

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[int]:
    """A loopback server running `handler(reader, writer, connection_index)` per connection; yields its port."""
    count = 0
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        index, count = count, count + 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer, index)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the test is over (cancelled) or the proxy went away: either is this server's end
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request head (and its Content-Length body) as received by the upstream."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            head += await reader.readexactly(int(line.split(b":")[1]))
    return head


def canned(*responses: bytes, close: bool = False) -> Handler:
    """Answer the n-th request on each connection with responses[n]; close after the last when `close`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        for response in responses:
            await read_request(reader)
            writer.write(response)
            await writer.drain()
        if not close:
            await reader.read()

    return handler


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.read()


Result = tuple[h11.Response, bytes, list[tuple[bytes, bytes]]]


async def h11_get(port: int, requests: list[h11.Request]) -> list[Result]:
    """Send `requests` one after the other on one connection, read with h11 (strict framing): each response,
    its body and its trailers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    results = []
    try:
        async with asyncio.timeout(10):
            for request in requests:
                writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
                response: h11.Response | None = None
                body, trailers = b"", []
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        trailers = list(event.headers)
                        break
                assert response is not None
                results.append((response, body, trailers))
                if conn.our_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
    finally:
        writer.close()
    return results


def get(target: str, *headers: tuple[str, str]) -> h11.Request:
    return h11.Request(method="GET", target=target, headers=[("Host", "x"), *headers])


def done(router: object) -> list[Exchange]:
    return router.done_list  # type: ignore[attr-defined,no-any-return]


# ----- HTTP/1.0 clients and Connection: close -----


async def test_http10_client_gets_length_or_close_delimited_and_keep_alive_only_when_asked(app_port: int) -> None:
    async with proxy(app_port) as p:
        got = await raw_exchange(p.port, b"GET /bytes?n=10 HTTP/1.0\r\n\r\n", b"never")  # read to the end
        head, _, body = got.partition(b"\r\n\r\n")
        assert b"Content-Length: 10" in head and b"connection: close" in head.lower() and len(body) == 10
        two = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        got = await raw_exchange(p.port, two + b"GET /healthz HTTP/1.0\r\n\r\n", b"never")
        assert got.count(b" 200 OK") == 2
        first, second = got.split(b"ok\n")[:2]
        assert b"connection: keep-alive" in first.lower() and b"connection: close" in second.lower()
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    async with raw_upstream(canned(chunked)) as port, proxy(port) as p:
        asked = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        got = await raw_exchange(p.port, asked, b"never")  # the end of the body is the end of the connection
        head, _, body = got.partition(b"\r\n\r\n")
        assert body == b"hello world"
        assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
        assert done(p.router)[0].response_bytes == 11


async def test_http10_client_gets_no_interim_responses() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with raw_upstream(handler) as port, proxy(port) as p:
        got = await raw_exchange(p.port, b"GET / HTTP/1.0\r\n\r\n", b"never")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\nok")
        got = await raw_exchange(p.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\nok")
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n")


async def test_connection_close_from_the_client_and_from_the_upstream(app_port: int) -> None:
    async with proxy(app_port) as p:
        got = await raw_exchange(p.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"never")
        assert got.lower().count(b"connection: close") == 1 and got.endswith(b"ok\n")
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    async with raw_upstream(canned(response, close=True)) as port, proxy(port) as p:
        results = await h11_get(p.port, [get("/a"), get("/b")])
        assert [(r.status_code, body) for r, body, _ in results] == [(200, b"ok"), (200, b"ok")]
        assert all(b"close" not in dict(r.headers).get(b"connection", b"") for r, _, _ in results)
        assert p.router.opened == 2  # the downstream stayed open; the upstream was not reused


# ----- bodiless responses, 1xx, trailers, re-framing -----


async def test_head_204_304_have_no_body_and_the_connection_goes_on(app_port: int) -> None:
    head_with_length = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    async with raw_upstream(canned(head_with_length, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as port:
        async with proxy(port) as p:
            data = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
            got = await raw_exchange(p.port, data, b"\r\n\r\nok")
            first, _, rest = got.partition(b"\r\n\r\n")
            assert b"Content-Length: 5" in first and rest.startswith(b"HTTP/1.1 200 OK\r\n")
            assert [e.response_bytes for e in done(p.router)] == [0, 2]
    async with proxy(app_port) as p:
        results = await h11_get(p.port, [get("/status/204"), get("/status/304"), get("/healthz")])
        assert [(r.status_code, body) for r, body, _ in results] == [(204, b""), (304, b""), (200, b"ok\n")]


async def test_chunked_response_is_rechunked_with_trailers_and_te_trailers_goes_upstream() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n")
        writer.write(b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n")
        await reader.read()

    async with raw_upstream(handler) as port, proxy(port) as p:
        [(response, body, trailers)] = await h11_get(p.port, [get("/", ("TE", "trailers"))])
        assert (response.status_code, body, trailers) == (200, b"abcdefg", [(b"x-sum", b"7")])
        assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
        assert b"\r\nte: trailers\r\n" in seen[0].lower() and b"connection: te\r\n" in seen[0].lower()


async def test_close_delimited_response_becomes_chunked_and_complete() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(5):
            writer.write(b"part %d\n" % i)
            await writer.drain()
        writer.close()

    async with raw_upstream(handler) as port, proxy(port) as p:
        [(response, body, _)] = await h11_get(p.port, [get("/")])
        assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
        assert body == b"".join(b"part %d\n" % i for i in range(5))
        assert (done(p.router)[0].status, done(p.router)[0].flags, p.router.pool.idle_count()) == (200, "-", 0)


# ----- pipelining with bodies -----


async def test_pipelined_posts_with_bodies_are_answered_in_order(app_port: int) -> None:
    async with proxy(app_port) as p:
        echo = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nbody-%d"
        upload = (
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nn%d\r\n0\r\n\r\n"
        )
        data = b"".join((echo if i % 2 == 0 else upload) % i for i in range(8))
        got = await raw_exchange(p.port, data + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"ok\n")
        conn = h11.Connection(h11.CLIENT)
        conn.receive_data(got)
        bodies: list[bytes] = []
        body = b""
        for _ in range(9):
            conn.send(get("/")) if conn.our_state is h11.IDLE else None
            conn.send(h11.EndOfMessage()) if conn.our_state is h11.SEND_BODY else None
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                body += event.data if isinstance(event, h11.Data) else b""
            bodies.append(body)
            body = b""
            conn.start_next_cycle()
        for i in range(0, 8, 2):
            assert bodies[i] == b"body-%d" % i
        for i in range(1, 8, 2):
            assert json.loads(bodies[i])["bytes"] == 3 + len(b"n%d" % i)
        assert bodies[8] == b"ok\n"
        assert [e.request_bytes for e in done(p.router)][:4] == [6, 5, 6, 5]


# ----- upstream failures -----


async def test_upstream_closing_mid_response_resets_the_client() -> None:
    truncated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    async with raw_upstream(canned(truncated, close=True)) as port, proxy(port) as p:
        for request in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            writer.write(request)
            got = b""
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(10):
                    while chunk := await reader.read(65536):
                        got += chunk
            writer.close()
            assert got == b"" or got.startswith(b"HTTP/1.1 200 OK")
        assert [(e.status, e.flags) for e in done(p.router)] == [(200, "UC"), (200, "UC")]


async def test_reused_upstream_closed_under_a_request_is_retried_once_when_idempotent() -> None:
    # The first connection answers one request, then takes the next and closes without a byte (as a server
    # does when its keep-alive timeout fires as the request arrives); later connections answer everything.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)
        if index == 0:
            return  # closed under the second request
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    async with raw_upstream(handler) as port, proxy(port) as p:
        results = await h11_get(p.port, [get("/a"), get("/b")])
        assert [r.status_code for r, _, _ in results] == [200, 200]
        assert p.router.opened == 2
        assert [(e.status, e.flags) for e in done(p.router)] == [(200, "-"), (200, "-")]
    async with raw_upstream(handler) as port, proxy(port) as p:
        post = h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")])
        results = await h11_get(p.port, [get("/a"), post])
        assert [r.status_code for r, _, _ in results] == [200, 503]  # never sent twice (RFC 9112 9.3.1)
        assert [(e.status, e.flags) for e in done(p.router)] == [(200, "-"), (503, "UC")]


async def test_silent_upstream_times_out_with_504_or_a_reset() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        if index == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await reader.read()

    async with raw_upstream(silent) as port, proxy(port, Limits(stream_idle_timeout=0.3)) as p:
        results = await h11_get(p.port, [get("/")])
        assert results[0][0].status_code == 504 and results[0][1] == b"upstream request timeout"
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(10):
                while await reader.read(65536):
                    pass
        writer.close()
        assert [(e.status, e.flags) for e in done(p.router)] == [(504, "UT"), (200, "UT")]


async def test_slow_upload_is_not_an_idle_stream(app_port: int) -> None:
    # The upstream says nothing until the body is whole; the body's bytes keep the stream alive.
    async with proxy(app_port, Limits(stream_idle_timeout=0.3)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):
            await asyncio.sleep(0.1)  # the pace of the client under test, not a wait for a result
            writer.write(b"x")
        async with asyncio.timeout(10):
            got = await reader.readuntil(b"}\n")
        writer.close()
        assert got.startswith(b"HTTP/1.1 200 ") and json.loads(got.partition(b"\r\n\r\n")[2])["bytes"] == 8


# ----- clients that leave -----


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("how", ["reset", "end of stream"])
async def test_client_leaving_mid_upload_aborts_the_upstream_as_dc(
    app_port: int, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ztunnel")
    async with proxy(app_port) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 50000)
        await until(lambda: p.sessions and p.router.opened == 1, "the upload to reach the upstream")
        await writer.drain()
        if how == "reset":
            _reset(writer)
        else:
            writer.write_eof()
        await until(lambda: len(done(p.router)) == 1 and not p.sessions, "the request to be recorded")
        [exchange] = done(p.router)
        assert (exchange.status, exchange.flags) == (0, "DC") and 0 < exchange.request_bytes <= 50000
        if how == "end of stream":
            with contextlib.suppress(ConnectionResetError):  # the proxy resets: the exchange failed
                async with asyncio.timeout(10):
                    assert await reader.read() == b""  # no 503 for a client that left
        writer.close()
        assert p.router.pool.idle_count() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_client_lost_while_the_upstream_connects_sends_nothing(app_port: int) -> None:
    entered, gate = asyncio.Event(), asyncio.Event()
    async with proxy(app_port) as p:
        connect = p.router.connect

        async def slow_connect(exchange: Exchange, fresh: bool) -> Upstream:
            entered.set()
            await gate.wait()
            return await connect(exchange, fresh)

        p.router.connect = slow_connect  # type: ignore[method-assign]
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            await entered.wait()
        [session] = p.sessions
        down = session.get_coro().cr_frame.f_locals["channel"]  # type: ignore[union-attr]
        _reset(writer)
        await until(lambda: down.lost, "the proxy to see the client's reset")
        gate.set()
        await until(lambda: len(done(p.router)) == 1, "the request to be recorded")
        assert done(p.router)[0].flags == "DC"
        assert p.router.pool.idle_count() == 1  # the fresh connection carried nothing: kept for the next


# ----- hostile input and headers -----

SMUGGLING = [
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00\r\n\r\n",
    b"GET /public HTTP/1.1\r\nHost: allowed\r\nHost: other\r\n\r\n",
]


@pytest.mark.parametrize("data", SMUGGLING)
async def test_smuggling_shapes_get_400_and_never_reach_the_upstream(app_port: int, data: bytes) -> None:
    async with proxy(app_port) as p:
        got = await raw_exchange(p.port, data + b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", b"never")
        assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n") and got.count(b"HTTP/1.1") == 1
        assert p.router.opened == 0 and [e.status for e in done(p.router)] == [400]


async def test_hop_by_hop_headers_end_at_the_proxy_both_ways(app_port: int) -> None:
    async with proxy(app_port) as p:
        headers = [
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "websocket"),
            ("TE", "gzip"),
            ("X-End", "2"),
        ]
        [(_, body, _)] = await h11_get(p.port, [get("/headers", *headers)])
        seen = json.loads(body)
        assert seen["host"] == "x" and seen["x-end"] == "2"
        for name in ("x-hop", "keep-alive", "proxy-connection", "upgrade", "te"):
            assert name not in seen, name
        assert "connection" not in seen or seen["connection"].lower() in ("keep-alive", "close")
    response = (
        b"HTTP/1.1 200 OK\r\nConnection: X-Bar\r\nX-Bar: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
    )
    async with raw_upstream(canned(response)) as port, proxy(port) as p:
        [(r, body, _)] = await h11_get(p.port, [get("/")])
        names = {name for name, _ in r.headers}
        assert body == b"ok" and not names & {b"x-bar", b"keep-alive", b"connection"}


async def test_every_outcome_is_recorded_once_with_body_bytes(app_port: int) -> None:
    async with proxy(app_port) as p:
        payload = b"z" * 1000
        post = h11.Request(method="POST", target="/echo", headers=[("Host", "x"), ("Content-Length", "1000")])
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        conn = h11.Connection(h11.CLIENT)
        writer.write(conn.send(post) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        writer.write(b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\nGET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n")
        writer.write(b"BAD\r\n\r\n")
        async with asyncio.timeout(10):
            await reader.read()
        writer.close()
        await until(lambda: not p.sessions, "the session to end")
        recorded = [(e.head.method, e.status, e.flags, e.request_bytes, e.response_bytes) for e in done(p.router)]
        assert recorded == [
            ("POST", 200, "-", 1000, 1000),
            ("GET", 403, "DENY", 0, len("RBAC: access denied")),
            ("GET", 404, "-", 0, len(b"status 404\n")),
            ("-", 400, "-", 0, 0),
        ]


# ----- fuzz: whatever arrives, the session answers sensibly and ends -----


class _Side:
    """A downstream side that keeps what the session writes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.eof_in = self.eof_out = False
        self.ended = False

    def write(self, data: bytes | memoryview) -> None:
        self.out += data

    def write_eof(self) -> None:
        self.eof_out = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def abort(self) -> None:
        self.ended = True

    def close(self) -> None:
        self.ended = True


class _LocalRouter(Untried):
    """Answers every request itself; an upstream is never asked for."""

    def __init__(self) -> None:
        self.done_list: list[Exchange] = []

    def admit(self, exchange: Exchange) -> Reply | None:
        return Reply(200, "ok")

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        raise AssertionError("no upstream in this test")

    def release(self, upstream: Upstream, reusable: bool) -> None: ...

    def done(self, exchange: Exchange) -> None:
        self.done_list.append(exchange)


VALID = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    b"GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"POST /2 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
]
ANSWERS = {200, 400, 408, 431, 501}
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

mutation = st.tuples(st.integers(0, 1000), st.integers(0, 4), st.binary(max_size=4))
stream = st.tuples(
    st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=60)), min_size=1, max_size=5).map(b"".join),
    st.lists(mutation, max_size=4),
    st.lists(st.integers(1, 64), max_size=8),
    st.booleans(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream)
@example((H2_PREFACE, [], [], False))  # found by hypothesis: the one input handed back rather than answered
async def test_any_input_gets_only_sensible_answers_and_the_session_ends(
    case: tuple[bytes, list[tuple[int, int, bytes]], list[int], bool],
) -> None:
    data, mutations, splits, eof = case
    for at, cut, insert in mutations:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + cut :]
    pieces, rest = [], data
    for size in splits:
        pieces.append(rest[:size])
        rest = rest[size:]
    pieces.append(rest)
    down, side, router = Channel(), _Side(), _LocalRouter()
    down.attach(side)  # type: ignore[arg-type]
    limits = Limits(max_head=512, header_timeout=0.05, idle_timeout=0.05, stream_idle_timeout=0.05, linger_timeout=0.05)
    task = asyncio.ensure_future(Session(down, router, limits).run())
    for piece in pieces:
        down.write(piece)
        await asyncio.sleep(0)
    if eof:
        down.write_eof()
    handed_back = await asyncio.wait_for(task, 5)  # never raises, never hangs
    if data.startswith(H2_PREFACE):  # HTTP/2 prior knowledge goes back to the L4 relay with the bytes read
        assert handed_back is not None and data.startswith(b"".join(handed_back)), handed_back
        return
    assert handed_back is None  # anything else is HTTP/1's to answer (no sniffing)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(side.out))]
    assert set(statuses) <= ANSWERS, bytes(side.out)
    assert len(statuses) == len(router.done_list)  # every answer recorded, once
    assert side.ended or not statuses or statuses[-1] == 200


async def test_broken_chunk_mid_upload_aborts_the_upstream_as_dpe(app_port: int) -> None:
    async with proxy(app_port) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await until(lambda: p.router.opened == 1, "the upload to reach the upstream")
        writer.write(b"zz\r\n")  # not a chunk size
        await until(lambda: len(done(p.router)) == 1, "the request to be recorded")
        assert (done(p.router)[0].flags, done(p.router)[0].request_bytes) == ("DPE", 3)
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(10):
                assert b"HTTP/1.1 200" not in await reader.read()  # the upstream never took it as complete
        writer.close()


async def test_h2c_upgrade_is_served_as_http11_with_its_body(app_port: int) -> None:
    h2c = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
    async with proxy(app_port) as p:
        data = b"POST /echo HTTP/1.1\r\nHost: x\r\n" + h2c + b"Content-Length: 5\r\n\r\nhello"
        data += b"GET /headers HTTP/1.1\r\nHost: x\r\n" + h2c + b"\r\n"
        got = await raw_exchange(p.port, data, b"}\n")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\nhello" in got
        seen = json.loads(got.rpartition(b"\r\n\r\n")[2])
        assert not {"upgrade", "http2-settings"} & set(seen)
        assert [(e.status, e.request_bytes) for e in done(p.router)] == [(200, 5), (200, 0)]


async def test_local_answer_to_an_http10_keep_alive_client_says_keep_alive(app_port: int) -> None:
    async with proxy(app_port) as p:
        asked = b"GET /admin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        got = await raw_exchange(p.port, asked + b"GET /admin HTTP/1.0\r\n\r\n", b"never")
        first, second = got.split(b"RBAC: access denied")[:2]
        assert b"connection: keep-alive" in first and b"connection: close" in second


async def test_unasked_101_is_a_protocol_error_not_a_switch() -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with raw_upstream(canned(switch)) as port, proxy(port) as p:
        [(response, body, _)] = await h11_get(p.port, [get("/")])
        assert response.status_code == 502 and b"protocol error" in body
        assert [(e.status, e.flags) for e in done(p.router)] == [(502, "UPE")]


async def test_denied_upload_reads_its_answer_not_a_reset(app_port: int) -> None:
    # The client sends its whole body without waiting: closing at once with its bytes unread would reset the
    # connection, and the reset would destroy the 403 before the client reads it.
    async with proxy(app_port, Limits(linger_timeout=5)) as p:
        for target in (b"/admin", b"/sha256"):
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            body = b"x" * (4 << 20)
            head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (target, len(body))
            if target == b"/sha256":
                head += b"X-Big: " + b"a" * (70 * 1024) + b"\r\n"  # refused 431, with the body on its way
            writer.write(head + b"\r\n")
            writer.write(body)
            async with asyncio.timeout(10):
                await writer.drain()
                got = await reader.read()
            writer.close()
            assert got.startswith(b"HTTP/1.1 403 " if target == b"/admin" else b"HTTP/1.1 431 "), got[:100]
        assert [e.status for e in done(p.router)] == [403, 431]


async def test_lingering_close_is_bounded() -> None:
    async with proxy(1, Limits(linger_timeout=0.3)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"POST /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc")
        async with asyncio.timeout(5):
            got = await reader.read()  # the proxy's half-close: the client never ends its upload
            assert got.startswith(b"HTTP/1.1 403 ")
            await until(lambda: not p.sessions, "the lingering close to end", timeout=5)
        writer.close()


async def test_upgrade_request_with_a_body_is_served_plain(app_port: int) -> None:
    async with proxy(app_port) as p:
        ws = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
        data = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\n"
            + ws
            + b"Content-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        got = await raw_exchange(p.port, data, b"ok\n")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\nhello" in got and got.endswith(b"ok\n")


async def test_client_leaving_while_the_upstream_thinks_aborts_it_at_once() -> None:
    upstream_ended = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        with contextlib.suppress(ConnectionError):
            await reader.read()  # never answers; returns when the proxy gives up the request
        upstream_ended.set()

    async with raw_upstream(slow) as port, proxy(port, Limits(stream_idle_timeout=60)) as p:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"GET /long-poll HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: p.router.opened == 1, "the request to reach the upstream")
        _reset(writer)
        async with asyncio.timeout(5):  # far below the stream idle timeout
            await upstream_ended.wait()
        await until(lambda: len(done(p.router)) == 1, "the request to be recorded")
        assert done(p.router)[0].flags == "DC"
