"""What the HTTP session and its router agree on: the limits, a request's record, an upstream, the router's calls.

`Session` (`session.py`) does HTTP; a `Router` (`ztunnel/proxy/http_outbound.py`, `http_inbound.py`) decides
what each request means for the mesh: `admit` (a policy, an endpoint), `connect` (an `Upstream`), `release`,
and `done` with the `Exchange`, the record metrics and the access log are made from. `Reply` is an answer the
proxy gives itself; the texts below are what Envoy answers in the same cases, so clients see the same.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from ztunnel.l7.channel import Channel
from ztunnel.l7.messages import Event, Head, ResponseParser

CONNECT_FAILURE = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
TERMINATION = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
PROTOCOL_ERROR = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
TIMEOUT = "upstream request timeout"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 9.2.2: the methods a proxy may send again after a connection failed under them."""


@dataclass(slots=True)
class Limits:
    max_head: int = 60 * 1024
    """Bytes of a request's line and headers (Envoy's default: 60 KiB); over it: 431."""
    header_timeout: float = 10.0
    """From a request's first byte to its complete head; over it: 408 (slowloris)."""
    idle_timeout: float = 60.0
    """A keep-alive connection with no request for this long is closed."""
    stream_idle_timeout: float = 300.0
    """No byte either way for this long during a request (Envoy's default): the request fails."""
    linger_timeout: float = 2.0
    """After an answer that ends the connection while the client is still sending: how long its bytes are
    read and dropped before the close, so that it reads the answer rather than a reset."""


@dataclass(slots=True)
class Reply:
    """An answer the proxy gives itself; `flags` are Envoy's response flags, `detail` goes to the log."""

    status: int
    body: str
    flags: str = "-"
    detail: str = ""


class UpstreamFailed(Exception):
    """The router could not give an upstream: answered with `reply`."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.detail or reply.body)
        self.reply = reply


@dataclass(slots=True)
class Upstream:
    """A connection to an upstream that carries HTTP/1.1 requests one at a time, kept alive between them."""

    channel: Channel
    address: str
    key: object = None
    """The router's pool key."""
    reused: bool = False
    parser: ResponseParser = field(default_factory=ResponseParser)
    events: deque[Event] = field(default_factory=deque)


@dataclass(slots=True)
class Exchange:
    """One request and what became of it: the record metrics and the access log are made from."""

    head: Head
    started: float = field(default_factory=time.time)
    clock: float = field(default_factory=time.perf_counter)
    status: int = 0
    flags: str = "-"
    request_bytes: int = 0
    response_bytes: int = 0
    duration_ms: float = 0.0
    upstream: str = ""
    detail: str = ""
    target: object = None
    """What the router chose for this request (an endpoint, a decision); its own business."""
    extra: list[bytes] = field(default_factory=list)
    """Header lines the router adds to the forwarded request."""
    drop: frozenset[bytes] = frozenset()
    """Header names (lowercase) the router replaces: not forwarded as received."""


class Router(Protocol):
    def admit(self, exchange: Exchange) -> Reply | None:
        """Decide the request: None forwards it (the choice kept in `exchange.target`), a Reply answers it."""
        ...

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        """An upstream for the request (`fresh`: not a kept-alive one); raises UpstreamFailed."""
        ...

    def release(self, upstream: Upstream, reusable: bool) -> None: ...

    def done(self, exchange: Exchange) -> None: ...
