"""Relaying bytes both ways between two ends of a tunnel: TCP sockets or HBONE streams.

Each end is a `Side`; what one side reads is written to its peer. Backpressure is mirrored: when a
side's write buffer is full it pauses its peer's reading, and resumes it once drained, so a slow reader
slows the writer down instead of growing a buffer. Half-close is carried through (EOF one way, the
other way keeps flowing), and a reset on one side resets the other, so a failure never looks like a
clean end of stream. `Tunnel` is the bookkeeping around a pair: labels, byte counts, the registry.

This is the hot path: asyncio Protocols rather than streams, no per-chunk allocation, no awaits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Protocol, cast

from ztunnel.metrics import Labels, Metrics
from ztunnel.observe.accesslog import ACCESS_LOG
from ztunnel.proxy.sockets import reset

log = logging.getLogger(__name__)
WRITE_HIGH_WATER = 1 << 20
"""Bytes buffered for a socket before its peer is paused: large enough to keep a fast path streaming."""
_ids = itertools.count(1)


class Side(Protocol):
    """One end of a tunnel, as its peer drives it."""

    closed: bool
    received: int
    eof_in: bool
    eof_out: bool

    def write(self, data: bytes | memoryview) -> None: ...
    def write_eof(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class Owner(Protocol):
    """What a side reports its end to: a `Tunnel` (L4 relay), or the L7 proxy's channel driving the side."""

    def side_lost(self, side: Side, error: BaseException | None) -> None: ...


class Tunnel:
    """One proxied connection: its two sides, what it is labelled, and what it carried."""

    def __init__(self, direction: str, metrics: Metrics, registry: set[Tunnel], describe: str) -> None:
        self.id = next(_ids)
        self.direction = direction
        self.metrics = metrics
        self.registry = registry
        self.describe = describe
        """`src -> dst` for logs and /config_dump."""
        self.downstream: Side | None = None
        self.upstream: Side | None = None
        self.labels: tuple[Labels, ...] = ()
        """One label set per reporter (two when one process is both ends of a same-node connection)."""
        self.started = time.time()
        self.finished = False
        self.on_finish: Callable[[Tunnel], None] | None = None
        self.failure = ""
        """Why setting it up failed ("" unless it did), for the access log."""
        self.sent_override: int | None = None
        """Bytes sent to the client when no upstream side carried them (the HTTP proxy wrote them)."""
        registry.add(self)

    def established(self, upstream: Side, *labels: Labels) -> None:
        """The upstream answered: count the connection and start relaying both ways."""
        if self.finished:  # the downstream ended while the upstream was being connected
            upstream.abort()
            return
        assert self.downstream is not None
        if labels:  # none: counted already (a connection the HTTP proxy handed back to the relay)
            self.labels = labels
            for label_set in labels:
                self.metrics.opened[label_set] += 1
        self.upstream = upstream
        self.downstream.peer = upstream  # type: ignore[attr-defined]
        upstream.peer = self.downstream  # type: ignore[attr-defined]
        if self.downstream.closed:
            upstream.abort()
        else:
            self.downstream.resume_reading()
            upstream.resume_reading()
            # An end of stream that arrived before the tunnel was up is passed on now, after the data.
            if self.downstream.eof_in:
                upstream.write_eof()
            if upstream.eof_in:
                self.downstream.write_eof()

    def side_lost(self, side: Side, error: BaseException | None) -> None:
        """One side is gone: end the other (reset unless this one ended cleanly both ways)."""
        other = self.upstream if side is self.downstream else self.downstream
        if other is not None and not other.closed:
            if error is not None or not (side.eof_in and side.eof_out):
                other.abort()
            else:
                other.close()
        self._maybe_finish()

    def fail(self) -> None:
        """Setting up failed: reset the downstream connection (the caller counted and logged why)."""
        if self.downstream is not None and not self.downstream.closed:
            self.downstream.abort()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.finished:
            return
        if (self.downstream is None or self.downstream.closed) and (self.upstream is None or self.upstream.closed):
            self.finished = True
            self.registry.discard(self)
            # Istio's meaning: "sent" is the response (what the destination sent back to the client),
            # "received" the request (what the client sent), so existing dashboards read them right.
            sent = self.upstream.received if self.upstream is not None else (self.sent_override or 0)
            received = self.downstream.received if self.downstream is not None else 0
            for label_set in self.labels:
                self.metrics.connection_closed(label_set, sent, received)
            if ACCESS_LOG.enabled:
                labels = self.labels[0] if self.labels else None
                ACCESS_LOG.connection(self.direction, self.started, self.describe, labels, received, sent, self.failure)
            if self.on_finish is not None:
                self.on_finish(self)
            # Both sides are closed: unlink them from each other and from the tunnel. Those links are reference
            # cycles, which would keep every finished connection (sides, transports, buffers) until the cyclic
            # garbage collector ran; without them it is freed as soon as the event loop lets go of it.
            for end in (self.downstream, self.upstream):
                if end is not None:
                    end.peer = None  # type: ignore[attr-defined]
            self.downstream = self.upstream = None

    def status(self) -> dict[str, object]:
        return {
            "id": self.id,
            "direction": self.direction,
            "connection": self.describe,
            "established": bool(self.labels),
            # As in the metrics: sent = towards the client (response), received = from the client (request).
            "sentBytes": self.upstream.received if self.upstream is not None else 0,
            "receivedBytes": self.downstream.received if self.downstream is not None else 0,
            "ageSeconds": round(time.time() - self.started, 3),
        }


class TcpSide(asyncio.Protocol):
    """A TCP socket as one side of a tunnel. Reading starts paused until the tunnel is established."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.received = 0
        self.closed = False
        self.eof_in = False
        self.eof_out = False
        self._early: list[bytes] = []

    # ----- asyncio.Protocol: this socket's events -----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they implement it.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.peer is None:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        peer = self.peer
        if peer is None:
            # uvloop starts reading an accepted socket after connection_made even when it paused there:
            # keep what came early (bounded by one read) and pause again.
            self._early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        peer.write(data)

    def eof_received(self) -> bool:
        self.eof_in = True
        if self.peer is not None:
            self.peer.write_eof()
        self._maybe_close()
        return True  # keep the socket open: the other direction may still flow

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.side_lost(self, exc)

    # ----- Side: driven by the peer -----

    def write(self, data: bytes | memoryview) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def write_eof(self) -> None:
        if self.closed or self.transport is None or self.eof_out:
            return
        self.eof_out = True
        self.transport.write_eof()  # sent once the buffer has drained
        self._maybe_close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._early and self.peer is not None:
            early, self._early = self._early, []
            for chunk in early:
                self.peer.write(chunk)
        if self.transport is not None and not self.closed and not self.eof_in:
            self.transport.resume_reading()

    def replay(self, chunks: list[bytes]) -> None:
        """Bytes taken from this socket by a reader that gave the connection back (the HTTP proxy handing it to
        the L4 relay): they go to the next peer first, before anything read later."""
        self._early[:0] = chunks

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            reset(self.transport)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _maybe_close(self) -> None:
        if self.eof_in and self.eof_out and self.transport is not None:
            self.transport.close()
