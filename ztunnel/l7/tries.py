"""The tries of one request through the HTTP session: connect, forward, and try again while its policy allows.

`Tries` is the part of `session.Session` that turns a router's `RequestPolicy` (an HTTPRoute rule's `timeouts` and
`retry`) into tries: each try is a `Router.connect` (the router picks the endpoint, another one than before when it
can), then the session's `_forward`. A try that fails before anything was answered is tried again up to `retries`
times, after a backoff that doubles per try (Gateway API's `backoff` is the least wait) with jitter: a connect
failure (even for a request with a body: none of it was read yet), a reset, a malformed answer, the per-try timeout
(504 UT), or a status of `retry_codes` (read, never passed on). Not once a response began, not a request whose
streamed body was (partly) sent (a small body of a declared length is read whole before the first try when retries
may follow, as Envoy buffers it, and sent again), not beyond the router's budget (`Router.retry`: the cluster's
`maxRetries`). The request's own timeout (`Session._exchange`) covers every try and backoff. Each try's outcome
goes to `Router.attempted` (outlier detection, requests in flight). When the tries are spent on a retriable failure
the last one stands, with flag URX (as Envoy's "upstream retry limit exceeded").

Without retries a request gets one try, except that a bodiless idempotent request whose reused upstream closed (not
reset) before answering is sent once more on a fresh connection (RFC 9112 9.3.1: the upstream may have closed the
idle connection as the request went out; one that resets took the request in, and its failure is the client's to
see, or its retry policy's). With retries that case is a retry like any other: counted, within the budget, on
another endpoint when there is one (an endpoint resetting requests must not hide behind resends).
"""

from __future__ import annotations

import asyncio
import random

from ztunnel.l7.channel import Channel, ChannelClosed
from ztunnel.l7.exchange import IDEMPOTENT, TIMEOUT, Exchange, Limits, Reply, Router, Upstream, UpstreamFailed
from ztunnel.l7.messages import BadMessage, Event, Head
from ztunnel.l7.response import ClientGone, RetryStatus, UpstreamLost


class Tries:
    """What a session needs to try a request; `Session` provides the downstream, forwarding and answering."""

    down: Channel
    router: Router
    limits: Limits

    async def _forward(self, exchange: Exchange, upstream: Upstream) -> bool:
        raise NotImplementedError

    async def _answer(self, exchange: Exchange, reply: Reply) -> bool:
        raise NotImplementedError

    def _done(self, exchange: Exchange) -> None:
        raise NotImplementedError

    async def _event(self, timeout: float) -> Event | None:
        raise NotImplementedError

    def _refuse(self, status: int, reason: str, flags: str) -> None:
        raise NotImplementedError

    async def _buffer_body(self, exchange: Exchange) -> bool:
        """Read a small request body whole before the first try, so that a retry can send it again (as Envoy
        buffers bodies for retries). False when the client's connection ended meanwhile (recorded)."""
        parts: list[bytes] = []
        while True:
            try:
                event = await self._event(self.limits.stream_idle_timeout)
            except BadMessage as exc:
                self._refuse(exc.status, f"{exc}", "DPE")
                return False
            except (TimeoutError, ChannelClosed):
                event = None
            if event is None:
                exchange.flags, exchange.detail = "DC", "client closed before the request body ended"
                self.down.abort()
                self._done(exchange)
                return False
            kind, value = event
            if kind == "body":
                assert isinstance(value, bytes)
                parts.append(value)
            elif kind == "end":
                exchange.body = b"".join(parts)
                return True

    async def _tries(self, exchange: Exchange) -> bool:
        """Connect, forward, answer; try again while the router's policy allows (`Exchange.policy`)."""
        head, router = exchange.head, self.router
        policy = exchange.policy
        # Timeouts bound requests, not what an upgrade (WebSocket, CONNECT) becomes: a long-lived byte stream.
        try_timeout = policy.try_timeout if policy is not None and not head.upgrade else None
        fresh = False
        while True:
            try:
                upstream = await router.connect(exchange, fresh)
            except UpstreamFailed as failed:
                if failed.retriable and await self._again(exchange, streamed=False):
                    continue
                return await self._answer(exchange, self._final(exchange, failed.reply, failed.retriable))
            exchange.upstream = upstream.address
            if self.down.lost:  # the client left while the upstream was being connected: nothing was sent
                self.router.release(upstream, True)
                router.attempted(exchange, 0)
                exchange.flags, exchange.detail = "DC", "client closed before the request was sent"
                self._done(exchange)
                return False
            try:
                if try_timeout is None:
                    keep = await self._forward(exchange, upstream)
                else:
                    attempt = asyncio.timeout(try_timeout)
                    try:
                        async with attempt:
                            keep = await self._forward(exchange, upstream)
                    except TimeoutError:
                        if not attempt.expired():
                            raise
                        raise UpstreamLost(exchange.answered, f"per-try timeout ({try_timeout:g}s)",
                                           Reply(504, TIMEOUT, "UT")) from None  # fmt: skip
                router.attempted(exchange, exchange.status)
                return keep
            except RetryStatus as answered:  # a retriable status, read before anything went to the client
                self.router.release(upstream, False)
                router.attempted(exchange, answered.status)
                await self._again(exchange, counted=True)
                continue
            except UpstreamLost as lost:
                self.router.release(upstream, False)
                router.attempted(exchange, None)
                resend = (
                    lost.reply.flags == "UC"
                    and not lost.reset  # a reset came from an upstream that took the request in: not resent
                    and upstream.reused
                    and not lost.answered
                    and not fresh
                    and not head.has_body
                    and head.method in IDEMPOTENT
                    and not (policy is not None and policy.retries)  # a retry policy decides, and counts, instead
                )
                if resend:  # a kept-alive connection the upstream closed as the request went out: not a try
                    fresh = True
                    continue
                if lost.answered:
                    exchange.flags = lost.reply.flags
                    exchange.detail = str(lost)
                    self.down.abort()
                    self._done(exchange)
                    return False
                if await self._again(exchange):
                    continue
                return await self._answer(exchange, self._final(exchange, lost.reply, True))
            except asyncio.CancelledError:
                self.router.release(upstream, False)
                router.attempted(exchange, None)
                raise
            except ClientGone as gone:
                self.router.release(upstream, False)
                router.attempted(exchange, 0)
                exchange.flags = gone.flags
                exchange.detail = str(gone)
                self.down.abort()
                self._done(exchange)
                return False

    def _may_retry(self, exchange: Exchange, streamed: bool = True) -> bool:
        """Whether the request may be tried again: its policy has tries left, nothing was answered, no body was
        streamed (`streamed`: the try got as far as sending), and the router's budget allows one more retry."""
        policy = exchange.policy
        if policy is None or exchange.answered or exchange.retries >= policy.retries:
            return False
        if streamed and exchange.head.has_body and exchange.body is None:
            return False
        return self.router.retry(exchange)

    def _retry_status(self, exchange: Exchange, status: int) -> bool:
        policy = exchange.policy
        if policy is None or status not in policy.retry_codes:
            return False
        if self._may_retry(exchange):
            return True
        if policy.retries:
            exchange.flags = "URX"  # retriable, and the tries (or the budget) are spent: this answer stands
        return False

    async def _again(self, exchange: Exchange, counted: bool = False, streamed: bool = True) -> bool:
        """Before another try: whether one may be made (`counted`: already granted), then its backoff, which
        doubles per try (Gateway API's `backoff` is the least wait) with jitter so that clients spread out."""
        if not counted and not self._may_retry(exchange, streamed):
            return False
        exchange.retries += 1
        policy = exchange.policy
        assert policy is not None
        delay = min(policy.backoff * 2 ** (exchange.retries - 1), policy.backoff * 10)
        await asyncio.sleep(delay * random.uniform(1.0, 1.25))
        return True

    def _final(self, exchange: Exchange, reply: Reply, retriable: bool) -> Reply:
        """The reply to a request whose last try failed: flagged URX when its retries were spent on it."""
        policy = exchange.policy
        if not retriable or policy is None or not policy.retries:
            return reply
        flags = "URX" if reply.flags == "-" else f"{reply.flags},URX"
        return Reply(reply.status, reply.body, flags, reply.detail, reply.headers)

    async def _timed_out(self, exchange: Exchange, detail: str) -> bool:
        """The request's own timeout fired: 504 when nothing was answered yet, else the client is reset (a
        response cut short must not look whole)."""
        if exchange.answered:
            exchange.flags, exchange.detail = "UT", detail
            self.down.abort()
            self._done(exchange)
            return False
        return await self._answer(exchange, Reply(504, TIMEOUT, "UT", detail))


RETRY_BUFFER = 64 * 1024
"""Request bodies up to this size (declared by Content-Length) are read whole when the request may be retried."""


def replayable(head: Head) -> bool:
    """A body that can be held for retries: small, of a declared length, and not awaiting a 100 Continue."""
    length = head.content_length
    return (
        bool(length)
        and length is not None
        and length <= RETRY_BUFFER
        and not head.upgrade
        and (head.get(b"expect") is None)
    )
