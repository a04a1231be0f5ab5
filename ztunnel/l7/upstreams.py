"""Upstream HTTP/1.1 connections kept alive between requests, per key (source, destination endpoint, path kind).

A request's upstream is a connection that carries one request at a time: over HBONE, a CONNECT stream to the
endpoint's node; for an endpoint of this node, a TCP connection to its app. Opening one costs a round trip
(the CONNECT's 200) or a TCP handshake, so after a complete exchange the connection waits here for the next
request to the same endpoint from the same source, for at most `idle_timeout`. That is shorter than the
destination's keep-alive timeout (`session.Limits.idle_timeout`), so it is almost always this side that
closes an idle connection, never the other while a request is on its way (the session retries that case
once anyway, for a bodiless idempotent request). A connection that ended or received bytes while idle is never
handed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from ztunnel.l7.channel import Channel
from ztunnel.l7.exchange import Upstream
from ztunnel.proxy.hbone import StreamSide

IDLE_TIMEOUT = 15.0
MAX_IDLE_PER_KEY = 32


class UpstreamPool:
    """Idle upstream connections by key, newest first out (the warmest connection serves next)."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, max_idle_per_key: int = MAX_IDLE_PER_KEY) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle_per_key = max_idle_per_key
        self._idle: dict[Hashable, list[tuple[Upstream, asyncio.TimerHandle]]] = {}
        self.reused = 0
        """Requests served on a kept-alive connection (exported as a metric)."""

    def take(self, key: Hashable) -> Upstream | None:
        """An idle connection for `key` that is still usable, marked as reused; None when there is none."""
        idle = self._idle.get(key)
        while idle:
            upstream, timer = idle.pop()
            timer.cancel()
            channel = upstream.channel
            if channel.lost or channel.buffered or upstream.events or _retired(channel):
                channel.abort()  # closed, sent something unasked while idle, or its tunnel's peer is gone
                continue
            if not idle:
                del self._idle[key]
            upstream.reused = True
            self.reused += 1
            return upstream
        self._idle.pop(key, None)
        return None

    def put(self, upstream: Upstream, reusable: bool) -> None:
        """Keep `upstream` for the next request to its key, or end it."""
        channel = upstream.channel
        if not reusable or channel.lost or channel.buffered or upstream.events:
            channel.abort()
            return
        if self.idle_timeout <= 0:  # keeping none: one upstream connection per request
            channel.close()
            return
        idle = self._idle.setdefault(upstream.key, [])
        if len(idle) >= self.max_idle_per_key:
            channel.close()
            return
        timer = asyncio.get_running_loop().call_later(self.idle_timeout, self._expire, upstream)
        idle.append((upstream, timer))

    def _expire(self, upstream: Upstream) -> None:
        idle = self._idle.get(upstream.key)
        if idle is None:
            return
        for i, (candidate, _) in enumerate(idle):
            if candidate is upstream:
                del idle[i]
                break
        if not idle:
            del self._idle[upstream.key]
        upstream.channel.close()

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        for idle in self._idle.values():
            for upstream, timer in idle:
                timer.cancel()
                upstream.channel.close()
        self._idle.clear()


def new_upstream(address: str, key: Hashable) -> tuple[Upstream, Channel]:
    """A fresh upstream record with its channel, before its side is attached."""
    channel = Channel()
    return Upstream(channel=channel, address=address, key=key), channel


def _retired(channel: Channel) -> bool:
    """Whether the channel is a stream on an HBONE connection the pool retired (its destination left)."""
    side = channel.side
    return isinstance(side, StreamSide) and side.conn.retired
