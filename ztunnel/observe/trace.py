"""W3C trace context (`traceparent`) and `x-request-id`, as a proxy propagates them.

A request arriving with a valid `traceparent` continues that trace: the proxy's span gets a new span id, with
the incoming one as its parent. An absent or invalid header (the W3C spec: anything that does not parse as
version 00, a 32-hex-digit trace id and a 16-hex-digit parent id, neither all zeros, and two hex digits of flags,
is ignored) starts a new trace. `tracestate` is carried unchanged by the caller. `x-request-id` is kept when
present, else a new UUID4. Ids come from os.urandom: cheap, and unpredictable across processes.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
SAMPLED = "01"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's place in a trace: its trace id, its own span id, its parent's span id ("" for a root)."""

    trace_id: str
    span_id: str
    parent_id: str = ""
    flags: str = SAMPLED

    def header(self) -> str:
        """The `traceparent` value that makes this span the parent of the next hop's."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse(value: str | None) -> TraceContext | None:
    """The context a `traceparent` header value carries, or None when it is absent or invalid.

    The parsed context's span_id is the caller's span (the parent of ours). Version ff is invalid; a later
    version than 00 may carry more fields after the flags, which are ignored (as the spec asks)."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, "", flags)


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def child(incoming: TraceContext | None) -> TraceContext:
    """This proxy's span: in the incoming trace (its span as our parent, its flags kept), or a new sampled
    root when there is none."""
    if incoming is None:
        return TraceContext(new_trace_id(), new_span_id())
    return TraceContext(incoming.trace_id, new_span_id(), incoming.span_id, incoming.flags)


def request_id(value: str | None) -> str:
    """The request's `x-request-id`: the one it came with, else a new UUID4."""
    return value if value else str(uuid.uuid4())
