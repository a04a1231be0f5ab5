"""HBONE over a TLS transport: the asyncio side of `ztunnel.hbone.H2Connection`, and streams as tunnel sides.

`HboneConnection` feeds what the TLS transport reads into the sans-IO connection, dispatches the events
to the streams, and writes out what the connection queued, once per read. A `StreamSide` is one CONNECT
stream as a relay `Side`: writes become DATA frames as far as the flow-control windows allow (the rest
waits for a WINDOW_UPDATE while its TCP peer is paused), and received data is acknowledged to the peer
only once the TCP side can take more, so HTTP/2 flow control is the tunnel's backpressure end to end.
Errors stay per stream: a reset stream resets its TCP peer; only a broken connection ends them all. That
holds for our own bugs too: an exception while handling one stream's event resets that stream
(INTERNAL_ERROR) and its tunnel, and the other streams carry on. Every failure is counted in
`meshlet_connection_errors_total` and logged, the first of each reason per connection at INFO (ERROR with
a traceback for a bug), the rest at DEBUG, so a peer flooding refused streams cannot flood the log.
A server connection may be given a preface timeout (no HTTP/2 preface and SETTINGS within it after the
TLS handshake: aborted) and an idle timeout (no stream for that long: GOAWAY and close). A draining
server connection (`drain`) says GOAWAY with the last stream it took, serves those to their end and closes
after the last; a client stream the peer refused unprocessed fails with `StreamRefusedError` (retryable).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from ztunnel.hbone import (
    STREAM_LIMIT_REACHED,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    H2Connection,
    H2Settings,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    StreamStateError,
    WindowUpdated,
)
from ztunnel.metrics import Metrics
from ztunnel.proxy.relay import WRITE_HIGH_WATER, Owner, Side

log = logging.getLogger(__name__)
JOIN_LIMIT = 64 * 1024
GOAWAY_GRACE = 0.5
"""Seconds a drained connection stays open after its last stream: streams the peer sent before it read our
GOAWAY still get their REFUSED_STREAM (a retry) rather than a reset connection."""


class StreamSide:
    """One CONNECT stream of an `HboneConnection`, as a side of a tunnel."""

    def __init__(self, conn: HboneConnection, stream_id: int, owner: Owner) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.owner = owner
        self.peer: Side | None = None
        self.received = 0
        self.closed = False
        self.eof_in = False
        self.eof_out = False
        self.paused = True  # until the tunnel is established: data waits in `early`, unacknowledged
        self._unacked = 0
        self._pending: list[bytes | memoryview] = []
        self._eof_wanted = False
        self._early: list[bytes | memoryview] = []

    # ----- from the connection -----

    def deliver(self, data: bytes | memoryview, flow_length: int) -> None:
        self.received += len(data)
        if self.peer is None:
            self._early.append(data)
        else:
            self.peer.write(data)
        if self.paused:
            self._unacked += flow_length
        else:
            self.conn.h2.acknowledge_received(self.stream_id, flow_length)

    def remote_ended(self) -> None:
        self.eof_in = True
        if self.peer is not None:
            self.peer.write_eof()
        self._maybe_done()

    def remote_reset(self) -> None:
        self._done(ConnectionResetError("stream reset by the peer"))

    def window_opened(self) -> None:
        """Offer what the windows refused before; resume the TCP peer once all of it went."""
        h2 = self.conn.h2
        try:
            while self._pending:
                chunk = self._pending[0]
                n = h2.send_data(self.stream_id, chunk)
                if n < len(chunk):
                    self._pending[0] = memoryview(chunk)[n:]
                    return
                self._pending.pop(0)
            if self._eof_wanted:
                self._eof_wanted = False
                self._end()
        except StreamStateError:
            self.abort()
            return
        if self.peer is not None and not self.conn.paused:
            self.peer.resume_reading()

    # ----- Side: driven by the TCP peer -----

    def write(self, data: bytes | memoryview) -> None:
        if self.closed:
            return
        if self._pending:
            self._pending.append(data)
            return
        try:
            n = self.conn.h2.send_data(self.stream_id, data)
        except StreamStateError:
            self.abort()
            return
        if n < len(data):
            self._pending.append(memoryview(data)[n:])
            if self.peer is not None:
                self.peer.pause_reading()
        self.conn.flush_soon()

    def write_eof(self) -> None:
        if self.closed or self.eof_out or self._eof_wanted:
            return
        if self._pending:
            self._eof_wanted = True
            return
        self._end()
        self.conn.flush()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        if self._early and self.peer is not None:
            early, self._early = self._early, []
            for chunk in early:
                self.peer.write(chunk)
        if self._unacked:
            self.conn.h2.acknowledge_received(self.stream_id, self._unacked)
            self._unacked = 0
            self.conn.flush()

    def replay(self, chunks: list[bytes]) -> None:
        """Bytes taken from this stream by a reader that gave it back (the HTTP proxy handing it to the L4
        relay); already acknowledged to the peer. They go to the next peer first."""
        self._early[:0] = chunks

    def abort(self) -> None:
        if self.closed:
            return
        self.conn.h2.reset_stream(self.stream_id, ErrorCode.CANCEL)
        self.conn.flush()
        self._done(None)

    def close(self) -> None:
        self.write_eof()

    def _end(self) -> None:
        try:
            self.conn.h2.end_stream(self.stream_id)
        except StreamStateError:
            pass  # reset meanwhile: the reset event ends this side
        self.eof_out = True
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.eof_in and self.eof_out:
            self._done(None)

    def _done(self, error: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.conn.stream_done(self)
        self.owner.side_lost(self, error)


class StreamRefusedError(ConnectionResetError):
    """The peer refused a stream without processing it (REFUSED_STREAM, or above the last stream id of its
    GOAWAY): nothing of it reached the destination, so it may be sent again on another connection."""


RequestHandler = Callable[["HboneConnection", RequestReceived], None]


class HboneConnection(asyncio.Protocol):
    """One HBONE (HTTP/2 over TLS) connection, client or server side."""

    def __init__(
        self,
        client: bool,
        on_request: RequestHandler | None = None,
        on_lost: Callable[[HboneConnection], None] | None = None,
        settings: H2Settings | None = None,
        metrics: Metrics | None = None,
        preface_timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.h2 = H2Connection(client, settings)
        self.client = client
        self.direction = "outbound" if client else "inbound"
        self.metrics = metrics
        """Where this connection's failures are counted, by (direction, reason); None counts nothing."""
        self.preface_timeout = preface_timeout
        self.idle_timeout = idle_timeout
        self.on_request = on_request
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, StreamSide] = {}
        self.responses: dict[int, asyncio.Future[int]] = {}
        self.paused = False
        self.lost = False
        self.goaway = False
        self.draining = False
        """(server) GOAWAY sent by `drain`: closes once its last stream ended."""
        self.retired = False
        """(client) `retire`d: takes no new stream, closes once its last stream ended."""
        self._grace: asyncio.TimerHandle | None = None
        self.peer_identity = ""
        self._flush_scheduled = False
        self.on_idle: Callable[[HboneConnection], None] | None = None
        self._preface_pending = True  # until the peer's SETTINGS arrived: checked once per read
        self._settings_waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None  # the preface timeout, then the idle check
        self._idle_since = 0.0
        self._logged: set[str] | None = None  # reasons logged at INFO on this connection (made on first use)
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop this connection lives on, once asked: Python 3.11's `get_running_loop` makes a getpid
        syscall per call (its fork check), and a flush is scheduled for every request."""

    # ----- asyncio.Protocol -----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they implement it.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.flush()  # the preface
        if self.preface_timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(self.preface_timeout, self._preface_expired)

    def data_received(self, data: bytes) -> None:
        h2 = self.h2
        try:
            events = h2.receive_data(data)
        except ProtocolError as exc:
            self.count_error(f"h2_{_code_name(exc.error_code)}", f"connection broken by the peer: {exc}")
            h2.close(exc.error_code, str(exc))
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        if self._preface_pending and h2.peer_settings_received:
            self._preface_done()
        streams = self.streams
        for ev in events:
            kind = type(ev)
            try:  # free unless raised (3.11+): one guard per event keeps a bug to its stream
                if kind is DataReceived:
                    side = streams.get(ev.stream_id)  # type: ignore[attr-defined]
                    if side is None:
                        h2.acknowledge_received(ev.stream_id, ev.flow_controlled_length)  # type: ignore[attr-defined]
                    else:
                        side.deliver(ev.data, ev.flow_controlled_length)  # type: ignore[attr-defined]
                elif kind is WindowUpdated:
                    if ev.stream_id == 0:  # type: ignore[attr-defined]
                        for side in list(streams.values()):
                            try:
                                side.window_opened()
                            except Exception as exc:
                                self.stream_failed(side.stream_id, exc)
                    elif (side := streams.get(ev.stream_id)) is not None:  # type: ignore[attr-defined]
                        side.window_opened()
                elif kind is RequestReceived and self.on_request is not None:
                    self.on_request(self, ev)  # type: ignore[arg-type]
                elif kind is ResponseReceived:
                    fut = self.responses.pop(ev.stream_id, None)  # type: ignore[attr-defined]
                    if fut is not None and not fut.done():
                        fut.set_result(ev.status)  # type: ignore[attr-defined]
                elif kind is StreamEnded:
                    if (side := streams.get(ev.stream_id)) is not None:  # type: ignore[attr-defined]
                        side.remote_ended()
                elif kind is StreamReset:
                    if not ev.remote:  # type: ignore[attr-defined]
                        self._count_reset(ev)  # type: ignore[arg-type]
                    self._stream_reset(ev.stream_id, ev.error_code)  # type: ignore[attr-defined]
                elif kind is ConnectionTerminated:
                    self.goaway = True
                    if ev.error_code != ErrorCode.NO_ERROR:  # type: ignore[attr-defined]
                        self.count_error(
                            f"h2_peer_{_code_name(ev.error_code)}",  # type: ignore[attr-defined]
                            f"GOAWAY from the peer: {bytes(ev.debug[:200])!r}",  # type: ignore[attr-defined]
                        )
            except Exception as exc:
                self.stream_failed(getattr(ev, "stream_id", 0), exc)
        self.flush()

    def pause_writing(self) -> None:
        self.paused = True
        for side in self.streams.values():
            if side.peer is not None:
                side.peer.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        for side in list(self.streams.values()):
            if side.peer is not None and not side._pending:
                side.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._cancel_timer()
        if self._grace is not None:
            self._grace.cancel()
        self._wake_settings_waiters()
        for fut in self.responses.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError("HBONE connection lost"))
        self.responses.clear()
        for side in list(self.streams.values()):
            side.remote_reset()
        if self.on_lost is not None:
            self.on_lost(self)

    # ----- for the proxy -----

    def flush_soon(self) -> None:
        """Flush once this turn of the event loop is over: what several streams queue in one turn (many
        apps' sockets read together) leaves as one TLS record and one write instead of one each."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._running_loop().call_soon(self._scheduled_flush)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        bufs = self.h2.buffers_to_send()
        if not bufs or self.transport is None or self.lost:
            return
        if len(bufs) == 1:
            self.transport.write(bufs[0])
        elif sum(map(len, bufs)) <= JOIN_LIMIT:
            # One TLS record instead of one per buffer (a 9-byte frame header would be a record of its
            # own): joining small writes costs a copy of a few KB and saves a record's crypto and framing.
            self.transport.write(b"".join(bufs))
        else:
            self.transport.writelines(bufs)

    def count_error(self, reason: str, detail: str, exc: BaseException | None = None) -> None:
        """Count a failure on this connection and log it: the first of each reason per connection at INFO
        (ERROR with the traceback when `exc`, a bug, is given), later ones at DEBUG."""
        if self.metrics is not None:
            self.metrics.errors[(self.direction, reason)] += 1
        if self._logged is None:
            self._logged = set()
        first = reason not in self._logged
        if first:
            self._logged.add(reason)
        level = (logging.ERROR if exc is not None else logging.INFO) if first else logging.DEBUG
        peer = self.peer_identity or "an unidentified peer"
        log.log(level, "%s HBONE connection with %s (%s): %s", self.direction, peer, reason, detail, exc_info=exc)

    def stream_failed(self, stream_id: int, exc: Exception) -> None:
        """A bug while handling one stream's event: reset that stream (INTERNAL_ERROR) and end its tunnel;
        the connection and its other streams carry on."""
        self.count_error("internal", f"handling stream {stream_id} failed: {exc!r}", exc)
        if stream_id == 0:
            return  # a connection-level event: there is no stream to reset
        self.h2.reset_stream(stream_id, ErrorCode.INTERNAL_ERROR)
        fut = self.responses.pop(stream_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionResetError(f"stream {stream_id} failed in this proxy"))
        side = self.streams.get(stream_id)
        if side is None:
            return
        try:
            side.abort()  # the H2 stream is gone already: this ends the side and resets its tunnel's peer
        except Exception:
            log.exception("cleaning up failed stream %d", stream_id)
            side.closed = True
            self.streams.pop(stream_id, None)

    @property
    def settings_known(self) -> bool:
        """Whether the peer's first SETTINGS arrived, so `usable` reflects its real stream limit."""
        return not self._preface_pending

    async def settings_received(self) -> None:
        """Return once the peer's first SETTINGS arrived (its stream limit is known) or the connection ended."""
        if not self._preface_pending or self.lost:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settings_waiters.append(fut)
        await fut

    @property
    def usable(self) -> bool:
        return not self.lost and not self.goaway and not self.retired and self.h2.available_streams > 0

    def retire(self) -> None:
        """(client) Open no new stream here: the destination left the mesh or changed, or a CONNECT went
        unanswered (a peer that vanished without a FIN). The streams it carries run to their end; closed after
        the last, or now when it has none."""
        self.retired = True
        if not self.streams:
            self.close()

    def open(
        self, authority: str, owner: Owner, headers: list[tuple[str, str]]
    ) -> tuple[StreamSide, asyncio.Future[int]]:
        """(client) Send a CONNECT; the future gets the response status."""
        stream_id = self.h2.open_stream(authority, headers)
        side = StreamSide(self, stream_id, owner)
        self.streams[stream_id] = side
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.responses[stream_id] = fut
        self.flush()
        return side, fut

    def accept(self, stream_id: int, owner: Owner) -> StreamSide:
        """(server) Track a requested stream before it is answered, so data for it is kept."""
        side = StreamSide(self, stream_id, owner)
        self.streams[stream_id] = side
        return side

    def respond(self, stream_id: int, status: int) -> None:
        """(server) 200 opens the tunnel; anything else refuses it and ends the stream."""
        try:
            self.h2.respond(stream_id, status, end_stream=status != 200)
        except StreamStateError:
            return  # reset by the client meanwhile
        if status != 200:
            side = self.streams.get(stream_id)
            if side is not None:
                side.eof_out = True
                side.abort()
        self.flush()

    def stream_done(self, side: StreamSide) -> None:
        self.streams.pop(side.stream_id, None)
        fut = self.responses.pop(side.stream_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionResetError("stream reset before the response"))
        if not self.streams:
            if self.draining:
                self._close_after_grace()
                return
            if self.retired:
                self.close()
                return
            self._idle_since = self._running_loop().time()
            if self.on_idle is not None:
                self.on_idle(self)

    def drain(self) -> None:
        """(server) GOAWAY(NO_ERROR) naming the last stream taken: the peer opens no more streams here (it
        retries those we did not take on a new connection), the open ones are served to their end, and the
        connection closes after the last."""
        if self.lost or self.transport is None or self.draining:
            return
        self.draining = True
        self.h2.close(ErrorCode.NO_ERROR, "draining")
        self.flush()
        if not self.streams:
            self._close_after_grace()

    def _close_after_grace(self) -> None:
        """Close a drained connection once a stream sent before our GOAWAY arrived could have been refused:
        closed at once, the peer could meet a reset instead of the REFUSED_STREAM it may safely retry."""
        if self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(GOAWAY_GRACE, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        if not self.streams:
            self.close()

    def close(self, error_code: int = ErrorCode.NO_ERROR, message: str = "") -> None:
        """GOAWAY then close: streams in flight end with the connection."""
        self._cancel_timer()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self.lost or self.transport is None:
            return
        self.h2.close(error_code, message)
        self.flush()
        self.transport.close()

    # ----- timeouts and accounting -----

    def _preface_done(self) -> None:
        self._preface_pending = False
        self._wake_settings_waiters()
        self._cancel_timer()
        if self.idle_timeout is not None and not self.lost:
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            self._timer = loop.call_later(self.idle_timeout, self._idle_check)

    def _preface_expired(self) -> None:
        self._timer = None
        if self.lost or self.transport is None or not self._preface_pending:
            return
        self.count_error("preface_timeout", f"no HTTP/2 preface within {self.preface_timeout:g}s of the handshake")
        self.transport.abort()  # nothing was said in HTTP/2, so nothing is owed: free the socket now

    def _idle_check(self) -> None:
        # One timer per connection, re-armed lazily: streams starting and ending only note the time.
        self._timer = None
        if self.lost or self.transport is None or self.idle_timeout is None:
            return
        loop = asyncio.get_running_loop()
        wait = self.idle_timeout
        if not self.streams:
            wait = self._idle_since + self.idle_timeout - loop.time()
            if wait <= 0:
                log.debug("closing HBONE connection with %s: no stream for %gs", self.peer_identity, self.idle_timeout)
                self.close()
                return
        self._timer = loop.call_later(wait, self._idle_check)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake_settings_waiters(self) -> None:
        waiters, self._settings_waiters = self._settings_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _count_reset(self, ev: StreamReset) -> None:
        """A stream we reset because of the peer: a stream refused at our limit, or a stream error."""
        if ev.error_code == ErrorCode.REFUSED_STREAM and ev.message == STREAM_LIMIT_REACHED:
            reason = "stream_limit"
        else:
            reason = f"h2_stream_{_code_name(ev.error_code)}"
        self.count_error(reason, f"stream {ev.stream_id} reset: {ev.message}")

    def _stream_reset(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        fut = self.responses.pop(stream_id, None)
        if fut is not None and not fut.done():
            if error_code == ErrorCode.REFUSED_STREAM:
                fut.set_exception(StreamRefusedError(f"stream {stream_id} refused by the peer"))
            else:
                fut.set_exception(ConnectionResetError(f"stream {stream_id} reset by the peer"))
        side = self.streams.get(stream_id)
        if side is not None:
            side.remote_reset()


def _code_name(code: int) -> str:
    """An HTTP/2 error code as a metric label, `protocol_error`; a peer's code outside RFC 9113 is `unknown`
    (never the number: a peer choosing codes must not choose how many series there are)."""
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return "unknown"
