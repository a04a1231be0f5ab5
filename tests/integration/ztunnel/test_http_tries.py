"""Timeouts and retries of the HTTP session on loopback: a router with several upstream "endpoints" (asyncio
servers that answer, reset, answer 503 or answer late) and the request policy an HTTPRoute rule gives
(`RequestPolicy`), driven by curl as a client.

What a client notices: a reset or 503 endpoint is tried around (the answer comes from a good one), a spent
retry budget answers with the failure and flag URX, `timeouts.request` answers 504 in time, a per-try timeout
moves on to the next endpoint, a request with a body is never sent twice, a route's response edits and its
own answers' headers (a redirect's location) reach the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.ztunnel.session_front import session_front
from ztunnel.l7.exchange import CONNECT_FAILURE, Exchange, Limits, Reply, RequestPolicy, Upstream, UpstreamFailed
from ztunnel.l7.messages import Headers
from ztunnel.l7.upstreams import UpstreamPool, new_upstream
from ztunnel.proxy.relay import TcpSide

pytestmark = pytest.mark.asyncio
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answering(name: str, status: int = 200, delay: float = 0.0) -> Behaviour:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await _read_head(reader)
                if delay:
                    await asyncio.sleep(delay)
                body = name.encode()
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\nx-from: %b\r\n\r\n%b" % (status, len(body),
                                                                                               body, body))  # fmt: skip
                await writer.drain()
        writer.close()

    return serve


async def resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        await _read_head(reader)
    writer.transport.abort()


@dataclass
class TriesRouter:
    """Every request goes to the endpoints in turn, first the untried ones; the policy is the test's."""

    ports: list[int]
    policy: RequestPolicy | None = None
    reply: Reply | None = None
    edit: Callable[[Headers], Headers] | None = None
    budget: int = 100
    limits: Limits = field(default_factory=Limits)
    pool: UpstreamPool = field(default_factory=lambda: UpstreamPool(idle_timeout=0))
    outcomes: list[tuple[int, int | None]] = field(default_factory=list)
    done_list: list[Exchange] = field(default_factory=list)
    _tried: list[int] = field(default_factory=list)

    def admit(self, exchange: Exchange) -> Reply | None:
        exchange.policy = self.policy
        exchange.response_edit = self.edit
        self._tried = []
        return self.reply

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        port = next((p for p in self.ports if p not in self._tried), self.ports[0])
        self._tried.append(port)
        upstream, channel = new_upstream(f"127.0.0.1:{port}", port)
        try:
            _, side = await asyncio.get_running_loop().create_connection(lambda: TcpSide(channel), "127.0.0.1", port)
        except OSError as exc:
            raise UpstreamFailed(Reply(503, CONNECT_FAILURE, "UF", str(exc)), retriable=True) from None
        channel.attach(side)
        return upstream

    def retry(self, exchange: Exchange) -> bool:
        if self.budget <= 0:
            return False
        self.budget -= 1
        return True

    def attempted(self, exchange: Exchange, status: int | None) -> None:
        self.outcomes.append((self._tried[-1], status))

    def release(self, upstream: Upstream, reusable: bool) -> None:
        self.pool.put(upstream, reusable)

    def done(self, exchange: Exchange) -> None:
        self.done_list.append(exchange)


@contextlib.asynccontextmanager
async def mesh(*behaviours: Behaviour) -> AsyncIterator[tuple[int, TriesRouter]]:
    """Upstream servers with these behaviours, and a proxy (the session) in front of them."""
    handlers: set[asyncio.Task[Any]] = set()

    def tracked(behaviour: Behaviour) -> Behaviour:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await behaviour(reader, writer)
            finally:
                writer.close()
                handlers.discard(task)

        return handle

    servers = [await asyncio.start_server(tracked(b), "127.0.0.1", 0) for b in behaviours]
    router = TriesRouter([s.sockets[0].getsockname()[1] for s in servers])
    try:
        async with session_front(router, router.limits) as (port, _):
            yield port, router
    finally:
        router.pool.close()
        for server in servers:
            server.close()
        for task in list(handlers):  # every upstream connection ends with the test, not when the loop is gone
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in servers:
            await server.wait_closed()


async def curl(port: int, *args: str, path: str = "/") -> tuple[int, dict[str, str], str, float]:
    """(status, response headers, body, seconds) of one request through the proxy."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-m", "10", "-D", "-", *args, f"http://127.0.0.1:{port}{path}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, err
    head, _, body = out.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body, elapsed


async def test_a_reset_endpoint_is_tried_around() -> None:
    async with mesh(resetting, answering("good")) as (port, router):
        router.policy = RequestPolicy(retries=2, backoff=0.001)
        status, _, body, _ = await curl(port)
        assert (status, body) == (200, "good")
        assert [s for _, s in router.outcomes] == [None, 200]
        assert router.done_list[-1].retries == 1


async def test_a_retriable_status_is_tried_again_and_others_are_not() -> None:
    async with mesh(answering("bad", 503), answering("good")) as (port, router):
        router.policy = RequestPolicy(retries=1, retry_codes=frozenset({503}), backoff=0.001)
        assert (await curl(port))[::2] == (200, "good")
        router.policy = RequestPolicy(retries=1, retry_codes=frozenset({500}), backoff=0.001)
        status, headers, body, _ = await curl(port)
        assert (status, body, headers["x-from"]) == (503, "bad", "bad")  # not a code of the policy: it stands


async def test_spent_retries_answer_the_failure_with_urx() -> None:
    async with mesh(answering("bad", 503), answering("worse", 503)) as (port, router):
        router.policy = RequestPolicy(retries=1, retry_codes=frozenset({503}), backoff=0.001)
        status, _, body, _ = await curl(port)
        assert (status, body) == (503, "worse")
        assert router.done_list[-1].flags == "URX"
    async with mesh(resetting, resetting) as (port, router):
        router.policy = RequestPolicy(retries=1, backoff=0.001)
        status, _, _, _ = await curl(port)
        assert status == 503
        assert router.done_list[-1].flags == "UC,URX"
        assert len(router.outcomes) == 2


async def test_the_retry_budget_stops_retries() -> None:
    async with mesh(resetting, answering("good")) as (port, router):
        router.policy = RequestPolicy(retries=2, backoff=0.001)
        router.budget = 0
        status, _, _, _ = await curl(port)
        assert status == 503
        assert router.done_list[-1].flags == "UC,URX"


async def test_the_request_timeout_answers_504_in_time() -> None:
    async with mesh(answering("slow", delay=2.0)) as (port, router):
        router.policy = RequestPolicy(timeout=0.2)
        status, _, body, elapsed = await curl(port)
        assert (status, body) == (504, "upstream request timeout")
        assert 0.2 <= elapsed < 1.0
        assert router.done_list[-1].flags == "UT"
        assert router.outcomes == [(router.ports[0], None)]


async def test_a_per_try_timeout_moves_on_to_another_endpoint() -> None:
    async with mesh(answering("slow", delay=2.0), answering("fast")) as (port, router):
        router.policy = RequestPolicy(try_timeout=0.2, retries=1, backoff=0.001)
        status, _, body, elapsed = await curl(port)
        assert (status, body) == (200, "fast")
        assert elapsed < 1.5


async def test_a_streamed_body_is_not_sent_twice() -> None:
    async with mesh(resetting, answering("good")) as (port, router):
        router.policy = RequestPolicy(retries=2, backoff=0.001)
        # Chunked (no declared length), and over the buffer: both stream, and a stream is sent once.
        for args in (("-H", "Transfer-Encoding: chunked"), ("-H", "Expect:")):
            size = 10 if args[1].startswith("Transfer") else 100 * 1024
            router.outcomes.clear()
            status, _, _, _ = await curl(port, *args, "--data-binary", "x" * size)
            assert status == 503
            assert len(router.outcomes) == 1


async def body_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with the body it got (Content-Length requests)."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            head = await _read_head(reader)
            length = next(int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                          if k.lower() == b"content-length")  # fmt: skip
            body = await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 X\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()


async def test_a_small_body_is_read_whole_and_sent_again_with_a_retry() -> None:
    async with mesh(resetting, body_echo) as (port, router):
        router.policy = RequestPolicy(retries=2, backoff=0.001)
        status, _, body, _ = await curl(port, "--data-binary", "payload of the POST")
        assert (status, body) == (200, "payload of the POST")
        assert [s for _, s in router.outcomes] == [None, 200]
        assert router.done_list[-1].request_bytes == len("payload of the POST")


async def test_route_response_edits_and_own_answer_headers_reach_the_client() -> None:
    async with mesh(answering("good")) as (port, router):
        router.edit = lambda headers: [(n, v) for n, v in headers if n.lower() != b"x-from"] + [(b"x-added", b"1")]
        _, headers, _, _ = await curl(port)
        assert headers.get("x-added") == "1" and "x-from" not in headers
        router.reply = Reply(302, "", "-", "", ((b"location", b"http://elsewhere/x"),))
        status, headers, _, _ = await curl(port)
        assert (status, headers["location"]) == (302, "http://elsewhere/x")


async def test_a_request_with_a_body_is_tried_again_when_its_connect_failed() -> None:
    async with mesh(answering("good")) as (port, router):
        closed = await asyncio.start_server(resetting, "127.0.0.1", 0)
        refused_port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        router.ports.insert(0, refused_port)  # nothing listens there: the connect fails, no byte of the body left
        router.policy = RequestPolicy(retries=1, backoff=0.001)
        status, _, body, _ = await curl(port, "--data", "payload")
        assert (status, body) == (200, "good")


async def test_a_reset_on_a_kept_alive_connection_is_a_counted_retry_under_a_retry_policy() -> None:
    served = 0

    async def every_second_resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await _read_head(reader)
                served += 1
                if served % 2 == 0:
                    writer.transport.abort()
                    return
                writer.write(b"HTTP/1.1 200 X\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()

    async with mesh(every_second_resets) as (port, router):
        router.pool = UpstreamPool()  # kept alive: the second request goes on the first one's connection
        router.policy = RequestPolicy(retries=2, backoff=0.001)
        code, out = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-m", "10", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} ", f"http://127.0.0.1:{port}/a",
            f"http://127.0.0.1:{port}/b", stdout=asyncio.subprocess.PIPE,
        ), None  # fmt: skip
        out, _ = await code.communicate()
        assert out.split() == [b"200", b"200"]
        assert router.done_list[-1].retries == 1  # the reset was retried through the policy, and counted


async def upgrading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Switches to an echo of raw bytes after the upgrade request."""
    await _read_head(reader)
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()


async def test_timeouts_do_not_cut_an_upgraded_connection() -> None:
    async with mesh(upgrading) as (port, router):
        router.policy = RequestPolicy(timeout=0.2, try_timeout=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.5)  # longer than both timeouts: the stream must still carry bytes
        writer.write(b"still here")
        async with asyncio.timeout(5):
            assert await reader.readexactly(10) == b"still here"
        writer.close()


async def test_an_idle_upgraded_connection_ends_after_the_stream_idle_timeout() -> None:
    async with mesh(upgrading) as (port, router):
        router.limits.stream_idle_timeout = 0.3
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        async with asyncio.timeout(5):  # then nothing either way: the proxy ends it
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""
        writer.close()
        assert router.done_list[-1].flags == "UT"
