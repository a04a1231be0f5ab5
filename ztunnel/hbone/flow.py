"""HTTP/2 flow control (RFC 9113 5.2 and 6.9) for one connection: the tunnels' backpressure.

Receiving. We count what the peer may still send (`recv_window`, per stream and for the connection).
DATA takes from both; the bytes come back only when the consumer calls `acknowledge` after writing
them onward, so a slow destination socket throttles the sender. For every window this holds:

    recv_window + unacked + (bytes delivered but not yet acknowledged) == the window we advertised

and acknowledging more than was delivered is a caller bug we refuse. `unacked` batches the returns:
a WINDOW_UPDATE goes out once a quarter of the window is waiting, not once per DATA frame, and
since that is less than the window the peer can never be starved by the batching.

Sending. We may send `min(stream send_window, connection send window)`; the peer's WINDOW_UPDATEs and
SETTINGS_INITIAL_WINDOW_SIZE changes move those numbers, the latter possibly below zero.
"""

from __future__ import annotations

from collections.abc import Iterable

from ztunnel.hbone import frames as fr
from ztunnel.hbone.errors import ErrorCode, ProtocolError
from ztunnel.hbone.settings import H2Settings
from ztunnel.hbone.streams import Stream


class FlowControl:
    """The connection-level windows, the initial stream windows, and the rules that move them."""

    __slots__ = ("conn_send", "conn_recv", "conn_unacked", "local_initial", "peer_initial", "_settings")

    def __init__(self, settings: H2Settings) -> None:
        self._settings = settings
        self.conn_send = fr.DEFAULT_WINDOW_SIZE
        """What we may send on the connection as a whole."""
        self.conn_recv = settings.connection_window_size
        """What the peer may send on the connection (the preface's WINDOW_UPDATE already counted)."""
        self.conn_unacked = 0
        self.local_initial = fr.DEFAULT_WINDOW_SIZE
        """New streams' receive window. Ours counts only from the peer's SETTINGS ACK (RFC 9113 6.9.2):
        before it the peer may rightly send by the default."""
        self.peer_initial = fr.DEFAULT_WINDOW_SIZE
        """New streams' send window, from the peer's SETTINGS_INITIAL_WINDOW_SIZE."""

    def new_stream(self, stream_id: int) -> Stream:
        """A stream with today's initial windows."""
        return Stream(stream_id, self.peer_initial, self.local_initial)

    # ----- receiving -----

    def receive(self, length: int) -> None:
        """Take a DATA frame's `length` from the connection window; overrunning it is fatal."""
        if length > self.conn_recv:
            raise ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, f"DATA of {length} bytes beyond the connection window")
        self.conn_recv -= length

    def acknowledge(self, st: Stream | None, length: int, out: list[bytes | bytearray | memoryview]) -> None:
        """Return `length` consumed bytes; queue WINDOW_UPDATEs on `out` when a batch is full.

        `st` is None once the stream is gone: then only the connection window gets the bytes back.
        """
        target = self._settings.connection_window_size
        unacked = self.conn_unacked + length
        if self.conn_recv + unacked > target:
            raise ValueError(f"acknowledged {length} bytes that were never received")
        if unacked >= target >> 2:
            out.append(fr.window_update_frame(0, unacked))
            self.conn_recv += unacked
            unacked = 0
        self.conn_unacked = unacked
        if st is None or st.remote_closed:
            return  # the peer sends nothing more on it: its window no longer matters
        st.unacked += length
        if st.unacked >= self.local_initial >> 2:
            out.append(fr.window_update_frame(st.stream_id, st.unacked))
            st.recv_window += st.unacked
            st.unacked = 0

    def local_settings_acked(self, streams: Iterable[Stream]) -> None:
        """The peer applied our SETTINGS_INITIAL_WINDOW_SIZE: move open streams by the difference."""
        delta = self._settings.initial_window_size - self.local_initial
        self.local_initial = self._settings.initial_window_size
        for st in streams:
            st.recv_window += delta

    # ----- sending -----

    def sendable(self, st: Stream) -> int:
        """What may be sent on `st` now."""
        return min(st.send_window, self.conn_send)

    def sent(self, st: Stream, length: int) -> None:
        """`length` bytes of DATA were queued on `st`."""
        st.send_window -= length
        self.conn_send -= length

    def grant_connection(self, increment: int) -> None:
        """The peer's connection WINDOW_UPDATE; a window past 2^31-1 is fatal."""
        if increment == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "connection WINDOW_UPDATE of 0")
        self.conn_send += increment
        if self.conn_send > fr.MAX_WINDOW_SIZE:
            raise ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")

    def grant_stream(self, st: Stream, increment: int) -> str:
        """The peer's stream WINDOW_UPDATE; returns why the stream must be reset, or "" if fine."""
        if increment == 0:
            return "stream WINDOW_UPDATE of 0"
        st.send_window += increment
        return "stream window above 2^31-1" if st.send_window > fr.MAX_WINDOW_SIZE else ""

    def peer_initial_window(self, value: int, streams: Iterable[Stream]) -> list[Stream]:
        """Apply the peer's new SETTINGS_INITIAL_WINDOW_SIZE to every stream; return those that grew."""
        delta = value - self.peer_initial
        self.peer_initial = value
        grown = []
        for st in streams:
            st.send_window += delta
            if st.send_window > fr.MAX_WINDOW_SIZE:
                raise ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, f"stream {st.stream_id} window above 2^31-1")
            if delta > 0:
                grown.append(st)
        return grown
