"""HTTP/1.x messages as the proxy sees them: heads parsed by llhttp (httptools), events, and the bytes written.

`RequestParser` and `ResponseParser` wrap httptools' parsers (llhttp, C: never a hand-written parser) and turn
what they report into a list of events per fed chunk: a head, body pieces, the end (with trailers, which llhttp
reports as headers after the body), or the switch to raw bytes after an `Upgrade` / `CONNECT`. Pipelined
requests are simply several heads in one list, answered in order by the session.

Limits: the bytes of a request head (line and headers) are counted as they arrive, so a head over
`max_head` is refused (431) before it is complete; a head llhttp rejects is a `BadMessage` (400) naming the
problem. The head a proxy forwards is rebuilt: hop-by-hop headers (RFC 9110 7.6.1, and those named by
`Connection`) are dropped, and the body's framing is the proxy's own choice for each hop. llhttp runs strict:
httptools leaves all of its leniency flags off unless `set_dangerous_leniencies` is called, which this proxy
never does, so the shapes of request smuggling (Content-Length with Transfer-Encoding, two Content-Lengths,
chunked not last, obs-fold, bare LF, NUL or CR in a field) are refused with 400, and so is an HTTP/1.1
request without exactly one Host (the authority a policy decides on must be the one the app sees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
Headers = list[tuple[bytes, bytes]]
"""Header names as received (case kept) with their values, in order."""
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class BadMessage(ValueError):
    """A message the proxy refuses: `status` is what the client is told (400, 431), the text says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class Head:
    """A request or response head. For a request `method`/`target` are set, for a response `status`/`reason`."""

    version: str
    headers: Headers
    method: str = ""
    target: str = ""
    status: int = 0
    reason: str = ""
    keep_alive: bool = True
    upgrade: bool = False
    """An `Upgrade` request or a `CONNECT`: after a 101 (2xx for CONNECT) the connection carries raw bytes."""
    chunked: bool = False
    content_length: int | None = None
    size: int = 0
    """Bytes of the head as received."""
    _lower: dict[bytes, list[bytes]] | None = field(default=None, repr=False)

    def get(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lowercase)."""
        values = self.values(name)
        return values[0] if values else None

    def values(self, name: bytes) -> list[bytes]:
        lower = self._lower
        if lower is None:
            lower = self._lower = {}
            for key, value in self.headers:
                lower.setdefault(key.lower(), []).append(value)
        return lower.get(name, [])

    def replace_headers(self, headers: Headers) -> None:
        """Put `headers` in place of the head's (a route's filters), keeping `get`/`values` in step."""
        self.headers = headers
        self._lower = None

    @property
    def has_body(self) -> bool:
        """Whether a request head announces a body (responses: see `ResponseParser`)."""
        return self.chunked or bool(self.content_length)


Event = tuple[str, object]
"""("head", Head) | ("body", bytes) | ("end", Headers of trailers) | ("raw", bytes after an upgrade)."""


class _Parser:
    """The callbacks httptools calls, collected into events; one instance per connection direction."""

    def __init__(self, max_head: int) -> None:
        self.max_head = max_head
        self.events: list[Event] = []
        self._headers: Headers = []
        self._url = b""
        self._reason = b""
        self._in_head = True
        self._head_bytes = 0
        self._head: Head | None = None
        self.failed: BadMessage | None = None
        """The error met after complete events of the same feed: raised once those have been taken."""
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._url = b""
        self._in_head = True
        self._head = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers = self._headers
        self._in_head = False
        size = len(self._url) + sum(len(n) + len(v) + 4 for n, v in headers) + 16
        if size > self.max_head:
            raise BadMessage(431, f"message head is {size} bytes, over the limit of {self.max_head}")
        head = self._make_head(headers)
        head.size = size
        self._head = head
        self._headers = []  # what follows before the end are trailers
        self.events.append(("head", head))

    def on_body(self, body: bytes) -> None:
        self.events.append(("body", body))

    def on_message_complete(self) -> None:
        self.events.append(("end", self._headers))
        self._headers = []
        self._in_head = True
        self._head_bytes = 0

    def _make_head(self, headers: Headers) -> Head:
        raise NotImplementedError

    def _framing(self, head: Head) -> Head:
        for name, value in head.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding":
                head.chunked = value.strip().lower().endswith(b"chunked")
            elif lowered == b"content-length":
                head.content_length = int(value)  # llhttp checked it (digits, no duplicates, not with chunked)
        return head

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`; returns the events it completed. Raises BadMessage, at once when nothing came before
        the error in this feed, else on the next call (pipelined requests before a bad one are served first)."""
        if self.failed is not None:
            raise self.failed
        try:
            self._feed(data)
        except BadMessage as exc:
            if not self.events:
                raise
            self.failed = exc
        events, self.events = self.events, []
        return events

    def _feed(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self.events.append(("raw", data[offset:]))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BadMessage):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            raise BadMessage(400, str(exc).lower() or "malformed message") from None
        if self._in_head and self._head_bytes > self.max_head:
            raise BadMessage(431, f"message head over {self.max_head} bytes and not complete")

    @property
    def mid_message(self) -> bool:
        """Bytes of a message were received but its head is not complete (the header timeout applies)."""
        return self._in_head and self._head_bytes > 0


class RequestParser(_Parser):
    def __init__(self, max_head: int = 60 * 1024) -> None:
        super().__init__(max_head)
        self.parser = httptools.HttpRequestParser(self)

    def _make_head(self, headers: Headers) -> Head:
        p = self.parser
        assert isinstance(p, httptools.HttpRequestParser)
        method = p.get_method().decode("latin-1")
        if p.get_http_version() not in ("1.0", "1.1"):  # llhttp reads `GET /` as HTTP/0.9: no headers, no framing
            raise BadMessage(400, f"unsupported HTTP version {p.get_http_version()}")
        head = Head(
            version=p.get_http_version(),
            headers=headers,
            method=method,
            target=self._url.decode("latin-1"),
            keep_alive=p.should_keep_alive(),
            upgrade=method == "CONNECT" or bool(p.should_upgrade()),
        )
        self._framing(head)
        hosts = len(head.values(b"host"))
        if hosts > 1 or (hosts == 0 and head.version == "1.1"):
            # RFC 9112 3.2; two would let a policy read one authority while the app serves the other.
            raise BadMessage(400, "missing host header" if hosts == 0 else "duplicate host header")
        codings = [c.strip().lower() for v in head.values(b"transfer-encoding") for c in v.split(b",")]
        if codings and codings != [b"chunked"]:
            # The proxy re-frames the body per hop, which only works when chunked is the body's sole coding
            # (RFC 9112 6.1: a coding the server does not implement gets 501).
            raise BadMessage(501, f"transfer-coding not implemented: {b', '.join(codings).decode('latin-1')}")
        return head

    def resume_plain(self, head: Head) -> None:
        """Go on after `head` as a plain request although it asked for an upgrade (h2c, which the proxy does not
        take): httptools stops parsing at an upgrade's head, so a fresh parser is primed with the head's framing
        and takes its body (then the requests after it) from the bytes fed next."""
        self.parser = httptools.HttpRequestParser(self)
        self.failed = None
        if head.has_body:
            framing = (
                b"transfer-encoding: chunked" if head.chunked else b"content-length: %d" % (head.content_length or 0)
            )
            self._feed(b"POST / HTTP/1.1\r\nhost: -\r\n" + framing + b"\r\n\r\n")
        self.events = []  # the primer's head is not a request
        self._in_head = not head.has_body
        self._head_bytes = 0


class ResponseParser(_Parser):
    """Responses of one upstream connection. `expect(method)` is told each request's method before its
    response: a response to HEAD has no body whatever its headers say, which llhttp cannot know."""

    def __init__(self, max_head: int = 256 * 1024) -> None:
        super().__init__(max_head)
        self.parser = httptools.HttpResponseParser(self)
        self.method = ""

    def expect(self, method: str) -> None:
        self.method = method

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reason = b""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.method == "HEAD" and self._head is not None and self._head.status >= 200:
            # No body follows; a fresh parser takes the next response (llhttp would wait for the body).
            self.events.append(("end", []))
            self.parser = httptools.HttpResponseParser(self)
            self._in_head = True
            self._head_bytes = 0

    def _make_head(self, headers: Headers) -> Head:
        p = self.parser
        assert isinstance(p, httptools.HttpResponseParser)
        head = Head(
            version=p.get_http_version(),
            headers=headers,
            status=p.get_status_code(),
            reason=self._reason.decode("latin-1"),
            keep_alive=p.should_keep_alive(),
        )
        return self._framing(head)


def hop_by_hop(head: Head) -> frozenset[bytes]:
    """The header names (lowercase) that end at this hop: the standard ones and any `Connection` names."""
    named = head.values(b"connection")
    if not named:
        return HOP_BY_HOP
    extra = {token.strip().lower() for value in named for token in value.split(b",")}
    return HOP_BY_HOP | extra


def end_to_end(head: Head, drop: frozenset[bytes] = frozenset()) -> list[bytes]:
    """The head's headers that travel on, as `name: value\\r\\n` lines."""
    skip = hop_by_hop(head) | drop
    return [n + b": " + v + b"\r\n" for n, v in head.headers if n.lower() not in skip]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


NOT_IN_TRAILERS = HOP_BY_HOP | {b"content-length", b"host"}
"""Fields that frame or route a message: never forwarded as trailers (RFC 9110 6.5.1)."""


def last_chunk(trailers: Headers) -> bytes:
    kept = (n + b": " + v + b"\r\n" for n, v in trailers if n.lower() not in NOT_IN_TRAILERS)
    return b"0\r\n" + b"".join(kept) + b"\r\n"


REASONS = {status.value: status.phrase for status in HTTPStatus}
"""Reason phrases for the answers the proxy gives itself (403, 404, 429, redirects, 5xx...)."""


def local_response(status: int, body: str, close: bool, head_only: bool = False, extra: Headers | None = None) -> bytes:
    """A response the proxy answers itself (a denial, a bad request, an unreachable upstream)."""
    payload = body.encode()
    lines = [
        b"HTTP/1.1 %d %b\r\n" % (status, REASONS.get(status, "Error").encode()),
        b"content-type: text/plain\r\n",
        b"content-length: %d\r\n" % len(payload),
    ]
    lines.extend(n + b": " + v + b"\r\n" for n, v in extra or ())
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(payload)
    return b"".join(lines)
