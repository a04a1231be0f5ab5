"""What `H2Connection.receive_data` reports: one event per thing the I/O layer must act on.

Events are plain records in arrival order. Stream ids are the only link back to the connection; the
I/O layer keeps its own map from stream id to the tunnel's other socket.
"""

from __future__ import annotations

from dataclasses import dataclass

from ztunnel.hbone.headers import HeaderList


class Event:
    """Base class of every event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """(server) A peer opened a CONNECT tunnel; answer with `respond()` or `reset_stream()`."""

    stream_id: int
    authority: str
    """Where the tunnel goes, `host:port` as sent (validated for shape, not resolved)."""
    headers: HeaderList
    """Regular fields such as `forwarded`, `baggage`, `traceparent`."""


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """(client) The final response to `open_stream()`; a 2xx status means the tunnel is up."""

    stream_id: int
    status: int
    headers: HeaderList


# Not frozen: this is created once per DATA frame and a frozen dataclass pays object.__setattr__ per
# field in __init__, which showed up in the framing benchmark. Treat it as immutable all the same.
@dataclass(slots=True)
class DataReceived(Event):
    """Tunnel bytes from the peer.

    Once `data` has been written onward, call `acknowledge_received(stream_id, flow_controlled_length)`:
    the peer can send no more than the windows allow until then, which is how backpressure reaches it.
    Acknowledge even when discarding the data, or the connection window shrinks for every stream.
    """

    stream_id: int
    data: bytes | memoryview
    """A view into received bytes; valid as long as it is referenced, never overwritten."""
    flow_controlled_length: int
    """Bytes the frame took from the windows: len(data) plus any padding."""


@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """The peer half-closed the stream (END_STREAM): it sends nothing more; we still may."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """The stream is gone, reset by the peer (`remote`) or by us because the peer broke its rules.

    Other streams on the connection are unaffected. Close the tunnel's other socket (abortively unless
    `error_code` is NO_ERROR) and still acknowledge any data received on it.
    """

    stream_id: int
    error_code: int
    remote: bool
    """True when the peer sent RST_STREAM (or refused the stream in a GOAWAY)."""
    message: str = ""
    """Why we reset it, for the log; empty when the peer did."""


@dataclass(frozen=True, slots=True)
class WindowUpdated(Event):
    """The peer granted more send window on a stream, or on the whole connection when `stream_id` is 0:
    a `send_data` that accepted less than it was given may be retried."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class SettingsAcked(Event):
    """The peer applied our SETTINGS."""


@dataclass(frozen=True, slots=True)
class PingAcked(Event):
    """The answer to our `ping()`, carrying the same 8 bytes (keepalive, round-trip time)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionTerminated(Event):
    """The peer sent GOAWAY: no new streams. Streams above `last_stream_id` were already reported as
    `StreamReset(REFUSED_STREAM)` and are safe to retry elsewhere; the others run to completion."""

    error_code: int
    last_stream_id: int
    debug: bytes = b""
