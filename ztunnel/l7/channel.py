"""A tunnel side (TCP socket or HBONE stream) driven as an async byte stream, for the HTTP proxy.

The L4 relay pairs two sides and never looks at the bytes. The HTTP proxy must read a request, decide, and
write something else, so it drives each side through a `Channel`: the channel is the side's peer (what the
side reads is queued here) and its owner (its end is reported here). Backpressure is kept both ways:
- reading: once more than `limit` bytes are queued the side is paused (a TCP socket stops reading, an HBONE
  stream stops acknowledging, so its sender's window closes) and resumed when the proxy has taken them;
- writing: when the side's own write buffer is full it pauses its peer, which here means `drain()` waits.
So a body streams through the proxy at the pace of the slower end, and nothing holds more than about one
`limit` of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ztunnel.proxy.relay import Side

LostCallback = Callable[[Side, BaseException | None], None]
READ_LIMIT = 256 * 1024
"""Bytes queued from a side before it is paused: a few reads, enough to keep a transfer streaming."""


class ChannelClosed(ConnectionError):
    """The side ended: reset by its peer, or closed before the proxy was done with it."""


class Channel:
    """One side as an async stream: `read()` what it received, `send()` to it, `drain()` for backpressure."""

    def __init__(self, on_lost: LostCallback | None = None, limit: int = READ_LIMIT) -> None:
        self.side: Side | None = None
        self.on_lost = on_lost
        """Called once when the side ends, as an owner's `side_lost` is (the connection's bookkeeping)."""
        self.lost_hook: Callable[[], None] | None = None
        """The proxy's own: called when the side ends, to act at once (abandon the request in flight)."""
        self.limit = limit
        self.sent = 0
        """Bytes written to the side."""
        self._queue: list[bytes] = []
        self._queued = 0
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._blocked = False
        self._waiters: list[asyncio.Future[None]] = []
        """One future per waiting coroutine (a reader, a writer in `drain`), all woken by any change: a future
        shared by two coroutines would be cancelled for both when one of them is."""

    def attach(self, side: Side) -> None:
        """Drive `side` from now on; it starts reading (what it read early is delivered first)."""
        self.side = side
        side.peer = self  # type: ignore[attr-defined]
        side.resume_reading()

    def detach(self) -> list[bytes]:
        """Give the side back (the proxy hands the connection to the L4 relay): its reading is paused, and what
        was read but not consumed is returned, to be replayed to the new peer first."""
        side, self.side = self.side, None
        if side is not None:
            side.pause_reading()
            side.peer = None  # type: ignore[attr-defined]
        queued, self._queue, self._queued = self._queue, [], 0
        return queued

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._queue

    @property
    def buffered(self) -> bool:
        """Whether anything was received and not read yet, or the end of stream."""
        return bool(self._queue) or self._eof

    # ----- the side's peer: what it read, and its write buffer's state -----

    def write(self, data: bytes | memoryview) -> None:
        self._queue.append(data if isinstance(data, bytes) else bytes(data))
        self._queued += len(data)
        if self._queued >= self.limit and self.side is not None:
            self.side.pause_reading()
        self._wake()

    def write_eof(self) -> None:
        self._eof = True
        self._wake()

    def pause_reading(self) -> None:
        """The side's write buffer is full: `drain()` waits until it resumes."""
        self._blocked = True

    def resume_reading(self) -> None:
        self._blocked = False
        self._wake()

    # ----- the side's owner -----

    def side_lost(self, side: Side, error: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        clean = error is None and side.eof_in and side.eof_out
        self._error = None if clean else (error or ChannelClosed("connection reset"))
        self._eof = True
        self._wake()
        if self.lost_hook is not None:
            self.lost_hook()
        if self.on_lost is not None:
            self.on_lost(side, error)

    # ----- the proxy's side -----

    async def read(self) -> bytes:
        """What the side received since the last read; b"" at its end of stream. Raises ChannelClosed when it
        was reset (or its peer vanished without an end of stream) and nothing is left to read."""
        while not self._queue:
            if self._eof:
                if self._error is not None:
                    raise ChannelClosed(str(self._error)) from self._error
                return b""
            await self._wait()
        queue = self._queue
        data = queue[0] if len(queue) == 1 else b"".join(queue)
        self._queue = []
        if self._queued >= self.limit and self.side is not None and not self._lost:
            self.side.resume_reading()
        self._queued = 0
        return data

    def unread(self, data: bytes) -> None:
        """Put back bytes read but not consumed, to be returned first by the next `read`."""
        if data:
            self._queue.insert(0, data)
            self._queued += len(data)

    def send(self, data: bytes | memoryview) -> None:
        if self.side is not None and not self._lost:
            self.sent += len(data)
            self.side.write(data)

    async def drain(self) -> None:
        """Wait while the side's write buffer is over its limit; raises ChannelClosed if the side ends."""
        while self._blocked:
            if self._lost:
                raise ChannelClosed("connection closed while writing")
            await self._wait()
        if self._lost and self._error is not None:
            raise ChannelClosed(str(self._error))

    def send_eof(self) -> None:
        if self.side is not None and not self._lost:
            self.side.write_eof()

    def close(self) -> None:
        """End the connection cleanly (after what was written)."""
        if self.side is not None and not self._lost:
            self.side.write_eof()
            self.side.close()

    def abort(self) -> None:
        """Reset the connection: the other end must not mistake a failure for a complete message."""
        if self.side is not None and not self._lost:
            self.side.abort()

    async def _wait(self) -> None:
        """Wait for the next change; callers re-check their condition (a wake-up may be for the other one)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
