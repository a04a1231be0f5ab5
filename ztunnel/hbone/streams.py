"""The streams of one HTTP/2 connection: per-stream state and the stream-id rules of RFC 9113 5.1.

Kept apart from `connection.py` so the state machine there reads as protocol logic, while the
bookkeeping (which ids are idle or closed, how many streams each side has open, which streams we reset
recently) lives here in one place.
"""

from __future__ import annotations

from collections.abc import Iterator

from ztunnel.hbone import frames as fr

# Streams we reset whose in-flight frames are still dropped quietly (RFC 9113 5.1); bounded so a peer
# cannot grow it, and 1024 covers far more than one round trip of resets.
_RECENT_RESETS = 1024


class Stream:
    """One CONNECT tunnel's protocol state; windows are in bytes."""

    __slots__ = (
        "stream_id",
        "send_window",
        "recv_window",
        "unacked",
        "head_sent",
        "head_received",
        "local_closed",
        "remote_closed",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.send_window = send_window
        """What we may still send before the peer's next WINDOW_UPDATE (negative after a SETTINGS cut)."""
        self.recv_window = recv_window
        """What the peer may still send us, as we count it."""
        self.unacked = 0
        """Bytes the consumer acknowledged that no WINDOW_UPDATE has announced yet."""
        self.head_sent = False
        """Our request or response HEADERS went out, so DATA may follow."""
        self.head_received = False
        """The peer's request, or its final (non-1xx) response, arrived."""
        self.local_closed = False
        self.remote_closed = False


class StreamTable:
    """Live streams by id, with the counters and id rules needed to judge frames for absent ones.

    A stream id not in the table is idle (never used yet: frames on it are a connection error) or
    closed (a stream error, or ignored when we reset it ourselves and the peer's frames were in flight).
    """

    def __init__(self, client: bool) -> None:
        self.client = client
        self.by_id: dict[int, Stream] = {}
        """Live streams; read directly on the data path."""
        self.next_local_id = 1 if client else 2
        self.last_peer_id = 0
        """Highest stream id the peer opened (what our GOAWAY reports)."""
        self.open_local = 0
        self.open_remote = 0
        self._recent_resets: dict[int, None] = {}  # insertion-ordered set, oldest evicted first

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self.by_id.values()))

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, st: Stream) -> Stream:
        """Register a new stream: ours takes the next local id, the peer's was checked to be idle."""
        self.by_id[st.stream_id] = st
        if self.is_ours(st.stream_id):
            self.next_local_id = st.stream_id + 2
            self.open_local += 1
        else:
            self.open_remote += 1
        return st

    def forget(self, st: Stream) -> None:
        """Drop a closed or reset stream; safe to call twice."""
        if self.by_id.pop(st.stream_id, None) is None:
            return
        if self.is_ours(st.stream_id):
            self.open_local -= 1
        else:
            self.open_remote -= 1

    def clear(self) -> None:
        """Drop everything (the connection is over)."""
        self.by_id.clear()
        self.open_local = self.open_remote = 0

    def ids_left(self) -> int:
        """How many more streams our id space allows."""
        return max(0, (fr.MAX_STREAM_ID - self.next_local_id) // 2 + 1)

    def is_ours(self, stream_id: int) -> bool:
        """Whether we initiate this id (clients odd, servers even)."""
        return (stream_id & 1) == (1 if self.client else 0)

    def is_idle(self, stream_id: int) -> bool:
        """Whether this id was never used (RFC 9113 5.1.1: ids only grow)."""
        if self.is_ours(stream_id):
            return stream_id >= self.next_local_id
        return stream_id > self.last_peer_id

    def remember_reset(self, stream_id: int) -> None:
        """Note that we reset `stream_id`, so its in-flight frames can be dropped quietly."""
        self._recent_resets[stream_id] = None
        if len(self._recent_resets) > _RECENT_RESETS:
            del self._recent_resets[next(iter(self._recent_resets))]

    def was_reset(self, stream_id: int) -> bool:
        """Whether we reset `stream_id` recently."""
        return stream_id in self._recent_resets
