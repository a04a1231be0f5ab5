"""The response half of an HTTP session: an upstream's response streamed back to the client, or a byte relay.

`ResponseRelay` is the part of `session.Session` that reads the upstream: its events (parsed by llhttp), with
the stream idle timeout counting bytes moving either way; the response's framing chosen for the client's hop
(Content-Length kept; chunked to HTTP/1.1 with the trailers; close-delimited to HTTP/1.0); what is ready
written in one piece before waiting for more; 1xx passed on to HTTP/1.1 clients; and after a 101 to an upgrade
(or a 2xx to CONNECT) the two connections joined by a byte relay. Failures are `UpstreamLost` (with the reply
the client gets when nothing was sent yet: 503 UC, 502 UPE, 504 UT) or `ClientGone` (DC, DPE).
"""

from __future__ import annotations

import asyncio
from collections import deque

from ztunnel.l7.channel import Channel, ChannelClosed
from ztunnel.l7.exchange import PROTOCOL_ERROR, TERMINATION, TIMEOUT, Exchange, Limits, Reply, Upstream
from ztunnel.l7.heads import response_head
from ztunnel.l7.messages import BadMessage, Event, Head, ResponseParser, chunk, last_chunk

FLUSH_BYTES = 64 * 1024
"""Response bytes gathered for one write to the client at most: more is written at once (bodies stream)."""


class UpstreamLost(Exception):
    """The upstream failed before its response ended; `answered` once any response byte went downstream.
    `reply` is what the client gets when nothing did: 503 UC (closed, reset), 502 UPE, 504 UT. `reset`: the
    upstream reset the connection (rather than closing it), which it does after taking the request in."""

    def __init__(self, answered: bool, detail: str, reply: Reply | None = None, reset: bool = False) -> None:
        super().__init__(detail)
        self.answered = answered
        self.reply = reply or Reply(503, TERMINATION, "UC", detail)
        self.reset = reset


class RetryStatus(Exception):
    """The upstream answered a status the request's policy retries, and another try was granted: nothing of
    this response went to the client."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered {status}: tried again")
        self.status = status


class ClientGone(Exception):
    """The downstream closed or reset in the middle of a request (DC), or sent a malformed body (DPE)."""

    def __init__(self, detail: str, flags: str = "DC") -> None:
        super().__init__(detail)
        self.flags = flags


class ResponseRelay:
    """What a session needs to relay a response; `Session` provides the downstream side and its events."""

    down: Channel
    limits: Limits
    events: deque[Event]
    _active: float

    def _upgrade_refused(self) -> None:
        raise NotImplementedError

    def _retry_status(self, exchange: Exchange, status: int) -> bool:
        raise NotImplementedError

    async def _up_event(self, upstream: Upstream, answered: bool) -> Event:
        events = upstream.events
        limit = self.limits.stream_idle_timeout
        loop = asyncio.get_running_loop()
        while not events:
            deadline = loop.time() + limit
            while True:
                if upstream.channel.buffered:  # ready: read without arming a timer
                    try:
                        data = await upstream.channel.read()
                    except ChannelClosed as exc:
                        raise UpstreamLost(answered, f"upstream reset: {exc}", reset=True) from None
                    break
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await upstream.channel.read()
                    break
                except ChannelClosed as exc:
                    raise UpstreamLost(answered, f"upstream reset: {exc}", reset=True) from None
                except TimeoutError:
                    deadline = self._active + limit  # a request body still moving keeps the stream alive
                    if deadline <= loop.time():
                        raise UpstreamLost(answered, "upstream idle timeout", Reply(504, TIMEOUT, "UT")) from None
            if not data:
                return ("eof", b"")
            try:
                events.extend(upstream.parser.feed(data))
            except BadMessage as exc:
                raise UpstreamLost(answered, f"malformed response: {exc}", Reply(502, PROTOCOL_ERROR, "UPE")) from None
        return events.popleft()

    async def _relay_response(self, exchange: Exchange, upstream: Upstream) -> tuple[bool, bool]:
        """Stream the response down; returns (keep the downstream, reuse the upstream). What is ready goes down in
        one write, before waiting for more from the upstream: a small response (head, body, end) costs the client
        side one write and one wake-up, not three."""
        head, down = exchange.head, self.down
        keep = head.keep_alive
        framing = "none"
        answered = False
        response: Head | None = None
        out: list[bytes] = []
        pending = 0
        while True:
            if down.lost:
                raise ClientGone("client closed before the response ended")
            if out and (not upstream.events or pending >= FLUSH_BYTES):
                await self._flush(out)
                pending = 0
            kind, value = await self._up_event(upstream, answered)
            if kind == "head":
                assert isinstance(value, Head)
                response = value
                status = response.status
                if status == 101 and not head.upgrade:
                    raise UpstreamLost(answered, "101 to a request without Upgrade", Reply(502, PROTOCOL_ERROR, "UPE"))
                if status == 101 or (head.method == "CONNECT" and 200 <= status < 300):
                    exchange.status = status
                    out.append(response_head(response, head, "upgrade", keep))
                    await self._flush(out)
                    answered = exchange.answered = True
                    await self._upgraded(exchange, upstream, head.method == "CONNECT")
                    return False, False
                if status < 200:  # 100 Continue and other interim answers go on, to HTTP/1.1 clients only
                    if head.version == "1.1":  # RFC 9110 15.2: never a 1xx to an HTTP/1.0 client
                        out.append(response_head(response, head, "none", keep))
                        await self._flush(out)  # the client may be waiting for it before sending the body
                    continue
                if exchange.policy is not None and self._retry_status(exchange, status):
                    raise RetryStatus(status)
                exchange.status = status
                if exchange.response_edit is not None:
                    response.replace_headers(exchange.response_edit(response.headers))
                if head.upgrade:
                    self._upgrade_refused()
                if head.method == "HEAD" or status in (204, 304):
                    framing = "none"
                elif response.content_length is not None:
                    framing = "length"
                elif head.version == "1.1":
                    framing = "chunked"
                else:
                    framing, keep = "close", False
                out.append(response_head(response, head, framing, keep))
                answered = exchange.answered = True
            elif kind == "body":
                assert isinstance(value, bytes)
                exchange.response_bytes += len(value)
                pending += len(value)
                self._active = asyncio.get_running_loop().time()
                out.append(chunk(value) if framing == "chunked" else value)
            elif kind == "end":
                if response is None or response.status < 200:
                    continue  # the end of an interim response
                if framing == "chunked":
                    assert isinstance(value, list)
                    out.append(last_chunk(value))
                await self._flush(out)
                return keep, response.keep_alive
            else:  # eof
                if response is not None and response.status >= 200 and framing in ("chunked", "close"):
                    if response.content_length is None and not response.chunked:
                        # A close-delimited response ends with its connection.
                        if framing == "chunked":
                            out.append(last_chunk([]))
                        await self._flush(out)
                        return keep, False
                raise UpstreamLost(answered, "upstream closed before the response ended")

    async def _flush(self, out: list[bytes]) -> None:
        """Write what is ready to the client in one piece, then wait while its side is over its buffer limit."""
        if out:
            self.down.send(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        try:
            await self.down.drain()
        except ChannelClosed:
            raise ClientGone("client closed during the response") from None

    async def _upgraded(self, exchange: Exchange, upstream: Upstream, connect: bool) -> None:
        """Relay raw bytes both ways (WebSocket, CONNECT) until both ends are done."""
        down, up = self.down, upstream.channel
        down.lost_hook = None  # each direction ends on its own now
        for kind, value in list(self.events):
            if kind == "raw" and value:
                assert isinstance(value, bytes)
                exchange.request_bytes += len(value)
                up.send(value)
        self.events.clear()
        for kind, value in list(upstream.events):
            if kind in ("raw", "body") and value:  # after a 2xx to CONNECT llhttp reads the rest as a body
                assert isinstance(value, bytes)
                exchange.response_bytes += len(value)
                down.send(value)
        upstream.events.clear()
        if connect:
            upstream.parser = ResponseParser()  # never fed again: the remaining bytes are raw

        loop = asyncio.get_running_loop()
        moved = loop.time()

        async def pump(src: Channel, dst: Channel, toward_client: bool) -> None:
            nonlocal moved
            while True:
                data = await src.read()
                if not data:
                    dst.send_eof()
                    return
                moved = loop.time()
                if toward_client:
                    exchange.response_bytes += len(data)
                else:
                    exchange.request_bytes += len(data)
                dst.send(data)
                await dst.drain()

        async def watch(limit: float) -> None:
            """The stream idle timeout of an upgraded connection: nothing either way for `limit`, it ends (one
            timer per connection, not one per read)."""
            while loop.time() - moved < limit:
                await asyncio.sleep(moved + limit - loop.time())
            exchange.flags, exchange.detail = "UT", "upgraded connection idle"
            raise TimeoutError("upgraded connection idle")

        tasks = [asyncio.ensure_future(pump(down, up, False)), asyncio.ensure_future(pump(up, down, True))]
        watchdog = asyncio.ensure_future(watch(self.limits.stream_idle_timeout))
        failed = False
        try:
            pending = {*tasks, watchdog}
            while not failed and not all(task.done() for task in tasks):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = any(task.exception() is not None for task in done)
            if failed:  # a reset one way (or the idle timeout) resets the other: both pumps end
                down.abort()
                up.abort()
            await asyncio.wait(tasks)
        finally:
            watchdog.cancel()
            for task in tasks:
                task.cancel()
        if not failed:
            down.close()
            up.close()
