"""One downstream HTTP/1.x connection through the proxy: each request read, decided, forwarded and answered in order.

The session is HTTP only; what a request means for the mesh (who may send it, which endpoint takes it, what is
counted) is its `Router`'s (`ztunnel/proxy/http_*.py`). Per request:
1. the head is parsed (llhttp); a bad one is answered 400 (431 when too large, 408 when it does not arrive
   within the header timeout, 501 for a transfer-coding other than chunked) and the connection closed (after
   the requests before it); an idle keep-alive connection is closed quietly; an h2c upgrade is served as the
   HTTP/1.1 request it also is (the proxy does not take h2c, as Envoy), and so is an upgrade with a body;
2. the router admits it or answers it itself (a policy denial: 403 `RBAC: access denied`, on the same
   connection when no body is left unread);
3. the router gives an upstream connection (kept alive between requests: `Upstream`), the head is rebuilt
   (hop-by-hop headers dropped, the router's headers added) and written, and the body streams through
   (`_pump_request`, concurrently with the response: `Expect: 100-continue` and early answers work);
4. the response streams back (`response.py`, the session's other half); its framing is chosen per hop
   (Content-Length kept; otherwise chunked to an HTTP/1.1 client with the trailers, close-delimited to
   HTTP/1.0); 1xx are passed on to HTTP/1.1 clients (RFC 9110 15.2); after a 101 to an upgrade (or a 2xx to
   CONNECT) both directions become a byte relay;
5. the router is told the outcome (`done`): status, Envoy-style response flags, bytes, duration.
A request's tries, timeouts and retries (the router's `RequestPolicy`) are `tries.py`'s.
Pipelined requests wait in the parser's event queue and are answered in order. A bodiless idempotent request
whose reused upstream closed before answering is retried once on a fresh connection (the upstream closed an
idle connection as the request went out: nothing was processed; RFC 9112 9.3.1 forbids retrying the others).
An upstream that fails before answering gets the client a 503 (UC), 502 for a malformed response (UPE), 504
when nothing moved either way for `stream_idle_timeout` (UT); after the response began, the client connection
is reset instead, so a truncated message is never taken for a whole one. A client that leaves during a request
aborts its upstream (DC; DPE when its body is malformed). An HTTP/2 preface (prior knowledge), or bytes that
are not HTTP when the router allows it, end the session with the bytes read, for the L4 relay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from ztunnel.l7.channel import Channel, ChannelClosed
from ztunnel.l7.exchange import (
    Exchange,
    Limits,
    Reply,
    Router,
    Upstream,
)
from ztunnel.l7.heads import request_head, upgrade_tokens
from ztunnel.l7.messages import (
    H2_PREFACE,
    BadMessage,
    Event,
    Head,
    RequestParser,
    chunk,
    last_chunk,
    local_response,
)
from ztunnel.l7.response import ClientGone, ResponseRelay, UpstreamLost
from ztunnel.l7.tries import Tries, replayable

log = logging.getLogger(__name__)


class Session(Tries, ResponseRelay):
    """Serves one downstream connection (a TCP socket from an app, or an HBONE stream) request by request."""

    def __init__(self, down: Channel, router: Router, limits: Limits, sniff: bool = False) -> None:
        self.down = down
        self.router = router
        self.limits = limits
        self.sniff = sniff
        """Bytes that are not HTTP at all before the first request are handed back (L4) rather than refused."""
        self.parser = RequestParser(limits.max_head)
        self.events: deque[Event] = deque()
        self.requests = 0
        self._first: list[bytes] | None = []
        """Raw bytes until the first head parsed: what goes to the L4 relay if this is not HTTP/1."""
        self._held = b""
        self._active = 0.0
        """Loop time of the last body bytes moved during a request: the stream idle timeout counts both ways."""
        self._lingering = False
        """The connection ends after an answer while the client may still be sending: `_linger` closes it."""

    async def run(self) -> list[bytes] | None:
        """Serve until the connection ends; returns the bytes read when it is to be relayed at L4 instead."""
        try:
            while True:
                try:
                    head = await self._next_head()
                except _Handback as handback:
                    return handback.data
                except BadMessage as exc:
                    self._refuse(exc.status, f"{exc}", "-")
                    break
                except TimeoutError:
                    if self.parser.mid_message:
                        self._refuse(408, "request head not received in time", "-")
                    else:
                        self.down.close()
                    break
                except ChannelClosed:
                    break
                if head is None:
                    self.down.close()
                    break
                self._first = None
                self.requests += 1
                if not await self._exchange(head):
                    break
            if self._lingering:
                await self._linger()
            return None
        except asyncio.CancelledError:  # the proxy is shutting down: nothing may be left half-open
            self.down.abort()
            raise
        except Exception:
            log.exception("HTTP session failed")
            self.down.abort()
            raise

    # ----- reading the downstream -----

    async def _next_head(self) -> Head | None:
        while True:
            limits = self.limits
            event = await self._event(limits.header_timeout if self.parser.mid_message else limits.idle_timeout)
            if event is None:
                return None
            kind, value = event
            if kind == "head":
                assert isinstance(value, Head)
                return value
            # A body or end without a head cannot happen; raw bytes without an upgrade neither.

    async def _event(self, timeout: float) -> Event | None:
        events = self.events
        while not events:
            if self.parser.failed is not None:  # after the requests that came before it were answered
                raise self.parser.failed
            if self.down.buffered:  # ready: no wait, so no timer to arm (most reads of a busy connection)
                data = await self.down.read()
            else:
                async with asyncio.timeout(timeout):
                    data = await self.down.read()
            if not data:
                return None
            if self._first is not None:
                data = self._sniff(data)
                if not data:
                    continue
            try:
                events.extend(self.parser.feed(data))
            except BadMessage:
                if self._first is not None and self.sniff and self.requests == 0:
                    raise _Handback(self._first) from None
                raise
            timeout = self.limits.header_timeout if self.parser.mid_message else timeout
        return events.popleft()

    def _sniff(self, data: bytes) -> bytes:
        """Before the first request: keep the raw bytes (for a hand-back to L4), and hold back what may be the
        start of the HTTP/2 preface until it is complete or ruled out (llhttp would read PRI as a method)."""
        first = self._first
        assert first is not None
        first.append(data)
        pending = self._held + data
        if pending[:3] == H2_PREFACE[:3] and H2_PREFACE.startswith(pending[: len(H2_PREFACE)]):
            if len(pending) >= len(H2_PREFACE):
                raise _Handback(first)  # HTTP/2 with prior knowledge: carried at L4, never broken
            self._held = pending
            return b""
        self._held = b""
        return pending

    def _refuse(self, status: int, reason: str, flags: str) -> None:
        """Answer a request that could not be read (400/408/431) and close the connection."""
        head = Head("1.1", [], method="-", target="-")
        exchange = Exchange(head, status=status, flags=flags, detail=reason)
        self.down.send(local_response(status, f"{_REASON_TEXT.get(status, 'bad request')}: {reason}\n", close=True))
        self._lingering = True
        self._done(exchange)

    # ----- one request -----

    async def _exchange(self, head: Head) -> bool:
        if head.upgrade and head.method != "CONNECT" and (head.has_body or upgrade_tokens(head) == {b"h2c"}):
            self._plain(head)
        exchange = Exchange(head)
        reply = self.router.admit(exchange)
        if reply is not None:
            return await self._answer(exchange, reply)
        policy = exchange.policy
        if policy is not None and policy.retries and replayable(head) and not await self._buffer_body(exchange):
            return False
        if policy is None or policy.timeout is None or head.upgrade:  # an upgraded stream lives on its own terms
            return await self._tries(exchange)
        deadline = asyncio.timeout(policy.timeout)
        try:
            async with deadline:
                return await self._tries(exchange)
        except TimeoutError:
            if not deadline.expired():
                raise
            return await self._timed_out(exchange, f"request timeout ({policy.timeout:g}s)")

    async def _answer(self, exchange: Exchange, reply: Reply) -> bool:
        """Send the proxy's own reply; the connection stays open only if no request body is left unread."""
        head = exchange.head
        complete = not head.has_body or exchange.body is not None or self._request_complete()
        keep = head.keep_alive and not head.upgrade and complete
        exchange.status, exchange.flags, exchange.detail = reply.status, reply.flags, reply.detail
        extra = list(reply.headers)
        if keep and head.version == "1.0":
            extra.append((b"connection", b"keep-alive"))
        payload = local_response(reply.status, reply.body, not keep, head.method == "HEAD", extra)
        self.down.send(payload)
        exchange.response_bytes = 0 if head.method == "HEAD" else len(reply.body.encode())
        self._done(exchange)
        if not keep:
            if complete:
                self.down.close()
            else:
                self._lingering = True  # its body is still coming: a close now would reset the answer away
        return keep

    async def _linger(self) -> None:
        """Close a connection the client may still be sending on (a denied upload, a refused request) so that it
        reads the answer rather than a reset (RFC 9112 9.6): half-close, drop what arrives until the client's end
        of stream or `linger_timeout`, then close."""
        down = self.down
        down.send_eof()
        try:
            async with asyncio.timeout(self.limits.linger_timeout):
                while await down.read():
                    pass
        except (TimeoutError, ChannelClosed):
            pass
        down.close()

    def _request_complete(self) -> bool:
        """Whether the current request's end is already queued (its body all read): then skip its body."""
        while self.events:
            kind, _ = self.events[0]
            if kind == "head":
                return False
            self.events.popleft()
            if kind == "end":
                return True
        return False

    async def _forward(self, exchange: Exchange, upstream: Upstream) -> bool:
        head, down, up = exchange.head, self.down, upstream.channel
        upstream.parser.expect(head.method)
        self._active = asyncio.get_running_loop().time()
        down.lost_hook = up.abort  # the client left: the upstream stops at once, not when it next writes
        up.send(request_head(exchange))
        pump: asyncio.Task[None] | None = None
        if exchange.body is not None:  # read whole before the first try (retries): sent again with each
            up.send(exchange.body)
            exchange.request_bytes = len(exchange.body)
        elif head.has_body:
            pump = asyncio.get_running_loop().create_task(self._pump_request(exchange, up))
        else:
            self._skip_end()
        try:
            keep, reusable = await self._relay_response(exchange, upstream)
        except BaseException as exc:
            if pump is not None:
                pump.cancel()
                failure = pump.exception() if pump.done() and not pump.cancelled() else None
                if isinstance(failure, ClientGone) and isinstance(exc, UpstreamLost):
                    raise failure from None  # the pump aborted the upstream because the client left
            if isinstance(exc, UpstreamLost) and down.lost:
                raise ClientGone("client closed before the response ended") from None
            raise
        finally:
            down.lost_hook = None
        if pump is not None and not (pump.done() and not pump.cancelled() and pump.exception() is None):
            # The response ended before the request body did (an early answer): neither connection can be
            # brought back in step with the other, and the client may still be sending.
            pump.cancel()
            keep = reusable = False
            self._lingering = True
        self.router.release(upstream, reusable)
        self._done(exchange)
        if not keep and not self._lingering:
            down.close()
        return keep

    def _skip_end(self) -> None:
        events = self.events
        if events and events[0][0] == "end":
            events.popleft()
        else:  # llhttp reports the end of a bodiless request with its head, in the same feed
            log.debug("bodiless request without its end queued")

    async def _pump_request(self, exchange: Exchange, up: Channel) -> None:
        """Stream the request body to the upstream, re-framed for this hop, at the upstream's pace."""
        chunked = exchange.head.chunked
        timeout = self.limits.stream_idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            try:
                event = await self._event(timeout)
            except TimeoutError:
                if loop.time() - self._active < timeout:
                    continue  # the response is moving: the stream is not idle
                up.abort()
                raise ClientGone("request body not complete: idle timeout") from None
            except ChannelClosed as exc:
                up.abort()
                raise ClientGone(f"request body not complete: {exc}") from None
            except BadMessage as exc:  # a broken chunk: the upstream must not take what came as the whole body
                up.abort()
                raise ClientGone(f"malformed request body: {exc}", "DPE") from None
            if event is None:
                up.abort()  # the client's end of stream before the body's end: the upstream must not take it whole
                raise ClientGone("client closed before the request body ended")
            kind, value = event
            if kind == "body":
                assert isinstance(value, bytes)
                self._active = loop.time()
                exchange.request_bytes += len(value)
                up.send(chunk(value) if chunked else value)
                try:
                    await up.drain()
                except ChannelClosed:
                    return  # the upstream is gone: the response side reports it
            elif kind == "end":
                if chunked:
                    assert isinstance(value, list)
                    up.send(last_chunk(value))
                return

    def _plain(self, head: Head) -> None:
        """Serve an upgrade request as the HTTP/1.1 request it also is, when the proxy cannot switch it: h2c (as
        Envoy, which does not take it either), or one with a body (llhttp would take the body for the new
        protocol's bytes). `Upgrade` and what `Connection` names (`HTTP2-Settings`) are not forwarded; its body
        and what follows are parsed again."""
        raw = b"".join(value for kind, value in self.events if kind == "raw" and isinstance(value, bytes))
        self.events.clear()  # llhttp's end of the message, reported with its head, and the raw bytes
        head.upgrade = False
        self.parser.resume_plain(head)
        self.down.unread(raw)

    def _upgrade_refused(self) -> None:
        """An upgrade answered without a switch: the client may go on with plain requests. llhttp stopped at the
        upgrade, so a fresh parser takes what the client sent after it, when the next request is read (a bad
        one is then answered 400 like any other)."""
        raw = b"".join(value for kind, value in self.events if kind == "raw" and isinstance(value, bytes))
        self.events.clear()
        self.parser = RequestParser(self.limits.max_head)
        self.down.unread(raw)

    def _done(self, exchange: Exchange) -> None:
        exchange.duration_ms = (time.perf_counter() - exchange.clock) * 1000.0
        try:
            self.router.done(exchange)
        except Exception:  # metrics or logging must never cost the connection
            log.exception("recording a request failed")


class _Handback(Exception):
    def __init__(self, data: list[bytes]) -> None:
        super().__init__("not HTTP/1")
        self.data = data


_REASON_TEXT = {
    400: "bad request",
    408: "request timeout",
    431: "request header fields too large",
    501: "not implemented",
}
