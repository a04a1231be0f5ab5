"""What the HTTP session and its router agree on: the limits, a request's record, an upstream, the router's calls.

`Session` (`session.py`) does HTTP; a `Router` (`ztunnel/proxy/http_outbound.py`, `http_inbound.py`) decides
what each request means for the mesh: `admit` (a policy, an endpoint), `connect` (an `Upstream`), `release`,
and `done` with the `Exchange`, the record metrics and the access log are made from. `Reply` is an answer the
proxy gives itself; the texts below are what Envoy answers in the same cases, so clients see the same.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ztunnel.l7.channel import Channel
from ztunnel.l7.messages import Event, Head, Headers, ResponseParser

CONNECT_FAILURE = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
TERMINATION = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
PROTOCOL_ERROR = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
TIMEOUT = "upstream request timeout"
OVERFLOW = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
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
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """Response headers beyond the framing (a redirect's `location`, a rate limit's `x-ratelimit-*`)."""


class UpstreamFailed(Exception):
    """The router could not give an upstream: answered with `reply`. `retriable`: a failure to reach the
    endpoint (another try may reach another one), not a decision (a denial, an overflow)."""

    def __init__(self, reply: Reply, retriable: bool = False) -> None:
        super().__init__(reply.detail or reply.body)
        self.reply = reply
        self.retriable = retriable


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """How long a request may take and how it is tried again (an HTTPRoute rule's `timeouts` and `retry`).

    `timeout` bounds the whole request, retries included; `try_timeout` each try, from its connect to the end
    of its response. Up to `retries` more tries are made after a try that failed before answering (connect
    failure, reset, `try_timeout`) or answered one of `retry_codes`, each after a `backoff` (doubling, with
    jitter). Only requests without a body are tried again: a body already streamed cannot be sent twice."""

    timeout: float | None = None
    try_timeout: float | None = None
    retries: int = 0
    retry_codes: frozenset[int] = frozenset()
    backoff: float = 0.025


@dataclass(slots=True)
class Upstream:
    """A connection to an upstream that carries HTTP/1.1 requests one at a time, kept alive between them."""

    channel: Channel
    address: str
    key: object = None
    """The router's pool key."""
    owner: object = None
    """What holds a connection slot for this upstream while it carries a request (the router's business)."""
    reused: bool = False
    requests: int = 0
    """Requests this connection carried (for `maxRequestsPerConnection`)."""
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
    policy: RequestPolicy | None = None
    """The router's timeouts and retries for this request (None: one try, no timeout of its own)."""
    retries: int = 0
    """Tries made after the first."""
    body: bytes | None = None
    """The request body, when it was read whole before the first try (so that retries can send it again)."""
    answered: bool = False
    """A response head went to the client: the request can no longer be tried again or answered otherwise."""
    response_edit: Callable[[Headers], Headers] | None = None
    """Applied to the final response's headers before they go to the client (a route's header filters)."""


class Router(Protocol):
    def admit(self, exchange: Exchange) -> Reply | None:
        """Decide the request: None forwards it (the choice kept in `exchange.target`), a Reply answers it."""
        ...

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        """An upstream for the request's next try (`fresh`: not a kept-alive one); raises UpstreamFailed."""
        ...

    def retry(self, exchange: Exchange) -> bool:
        """Whether another try may be made now (a cluster's budget of retries in flight); counted."""
        ...

    def attempted(self, exchange: Exchange, status: int | None) -> None:
        """A try ended: with this response status, None when no response came (connect failure, reset,
        timeout), 0 when the client abandoned it (not the upstream's doing). Once per `connect` that returned."""
        ...

    def release(self, upstream: Upstream, reusable: bool) -> None: ...

    def done(self, exchange: Exchange) -> None: ...


class Untried:
    """For a router without retries or per-try bookkeeping (the inbound side: the source's proxy retries)."""

    def retry(self, exchange: Exchange) -> bool:
        return False

    def attempted(self, exchange: Exchange, status: int | None) -> None:
        return None
