"""HTTP/2 error codes and the exceptions the HBONE layer raises.

Two kinds of failure are kept apart on purpose. A `ProtocolError` means the peer broke the connection's
rules (bad framing, HPACK desync, flow-control overflow of the connection window): the I/O layer must
send GOAWAY with its `error_code` and close, because every stream shares the broken state. Errors that
concern a single stream never raise: the connection resets that stream and reports a `StreamReset`
event, so the other tunnels on the same TLS connection keep running.

`StreamStateError` and `NoAvailableStreamError` are about the local caller (writing to a stream that
is already closed, opening a stream on a draining connection); they never put anything on the wire.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """HTTP/2 error codes (RFC 9113 section 7), carried by RST_STREAM and GOAWAY."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class H2Error(Exception):
    """Base class of every exception raised by `ztunnel.hbone`."""


class ProtocolError(H2Error):
    """The peer violated HTTP/2 at the connection level; answer with GOAWAY(`error_code`) and close."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(f"{_name(error_code)}: {message}")
        self.error_code = error_code
        """The code to put in the GOAWAY frame."""


class StreamStateError(H2Error):
    """The caller acted on a stream that does not allow it (unknown, closed, reset, or not yet answered).

    Usually a race the I/O layer should expect: the peer reset the stream while data was being read
    from the other side. Drop the data and stop forwarding for this stream.
    """


class NoAvailableStreamError(H2Error):
    """No new stream can be opened on this connection: it is closing, the peer sent GOAWAY, the peer's
    SETTINGS_MAX_CONCURRENT_STREAMS is reached, or stream ids are exhausted. Use another connection."""


def _name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error 0x{code:x}"
