"""HBONE's HTTP/2 layer, sans-IO: the tunnels of Istio-style ambient mesh over one mTLS connection.

HBONE is HTTP/2 over TLS (ALPN h2) where each stream is a plain CONNECT (RFC 9113 8.5: `:method
CONNECT`, `:authority ip:port`) carrying one tunneled TCP connection; many streams share a connection.
Nothing here touches sockets or asyncio: the proxy's I/O code feeds bytes in and writes bytes out,
which keeps the protocol testable in memory and the I/O code small.

- `frames`: wire constants, encoders and the `FrameReader`; DATA headers are encoded apart from their
  payload so tunnel bytes are never copied on the way out, nor on the way in when a frame arrives whole.
- `headers`: what a well-formed CONNECT request and response look like (HPACK is the `hpack` package).
- `connection`: `H2Connection`, the per-connection state machine; it keeps per-stream state and the
  stream-id rules in `streams`, the windows in `flow`, and what we advertise in `settings`.
- `events`: what `H2Connection.receive_data` reports.
- `errors`: error codes and exceptions; stream errors never raise, connection errors do.

We frame HTTP/2 ourselves rather than use the `h2` library because the data path is DATA frames, and
`h2` costs about twice a plain TLS forward per byte (per-frame debug strings, payload copies).
"""

from ztunnel.hbone.connection import ASSUMED_PEER_MAX_STREAMS, STREAM_LIMIT_REACHED, H2Connection
from ztunnel.hbone.errors import ErrorCode, H2Error, NoAvailableStreamError, ProtocolError, StreamStateError
from ztunnel.hbone.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAcked,
    RequestReceived,
    ResponseReceived,
    SettingsAcked,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from ztunnel.hbone.settings import H2Settings

__all__ = [
    "ASSUMED_PEER_MAX_STREAMS",
    "STREAM_LIMIT_REACHED",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCode",
    "Event",
    "H2Connection",
    "H2Error",
    "H2Settings",
    "NoAvailableStreamError",
    "PingAcked",
    "ProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "SettingsAcked",
    "StreamEnded",
    "StreamReset",
    "StreamStateError",
    "WindowUpdated",
]
