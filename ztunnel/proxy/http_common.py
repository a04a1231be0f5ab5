"""What both HTTP routers (outbound, inbound) do per request besides deciding: trace context, and recording.

Each proxy on a request's path is one span of its trace (W3C trace context): the request's `traceparent` is
read (a new trace is started when it is absent or invalid), this hop's span is its child and is what the
next hop sees as parent; `x-request-id` is kept, or created at the first proxy. When the request is done it
is counted in Istio's request metrics (per reporter) and written to the access log when that is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ztunnel.l7.authz import Request
from ztunnel.l7.exchange import Exchange, Reply
from ztunnel.l7.messages import Head
from ztunnel.l7.paths import normalize
from ztunnel.metrics import Metrics, Peer, request_labels
from ztunnel.observe.accesslog import ACCESS_LOG, RequestRecord
from ztunnel.observe.trace import TraceContext, child, parse, request_id
from ztunnel.rbac import Decision

DENIED = Reply(403, "RBAC: access denied", "DENY", "denied by policy")
"""What a request denied by an AuthorizationPolicy gets, exactly as Istio's proxies answer it."""
_TRACE_HEADERS = frozenset({b"traceparent"})


@dataclass(slots=True)
class Call:
    """One request as a router sees it: its trace, its request id, the decision and both ends' labels."""

    trace: TraceContext
    request_id: str
    source: Peer
    destination: Peer = field(default_factory=Peer)
    service: tuple[str, str] | None = None
    mutual_tls: bool = True
    decision: str = ""
    policy: str = ""
    audit: bool = False
    route: object = None
    """The router's choice of upstream for this request (its latest try's)."""
    plan: object = None
    """The outbound router's plan (`ztunnel.l7.plan.Plan`): route rule, backend cluster, policy."""
    tried: list[str] = field(default_factory=list)
    """Endpoint IPs tried for this request, in order."""
    retrying: bool = False
    """The current try is a retry holding one of its cluster's `maxRetries`."""

    def note(self, verdict: Decision) -> None:
        """Keep an authorization decision for the access log."""
        self.decision = "allow" if verdict.allowed else "deny"
        self.policy = verdict.policy or ""
        self.audit = verdict.audit


def begin(exchange: Exchange, source: Peer) -> Call:
    """Trace context and request id for a request, and the headers that carry them on."""
    head = exchange.head
    raw_parent = head.get(b"traceparent")
    trace = child(parse(raw_parent.decode("latin-1") if raw_parent is not None else None))
    raw_id = head.get(b"x-request-id")
    rid = request_id(raw_id.decode("latin-1") if raw_id is not None else None)
    exchange.drop = _TRACE_HEADERS
    exchange.extra.append(b"traceparent: " + trace.header().encode() + b"\r\n")
    if raw_id is None:
        exchange.extra.append(b"x-request-id: " + rid.encode() + b"\r\n")
    call = Call(trace, rid, source)
    exchange.target = call
    return call


BAD_PATH = Reply(400, "bad request: the request path cannot be normalized\n", "-", "path not normalizable")


def normalize_target(head: Head) -> bool:
    """Put the request target in the form authorization decided on, as Istio forwards it: the path normalized
    (`ztunnel.l7.paths.normalize`: dot segments resolved, unreserved escapes decoded, `\\` as `/`) with the
    query kept, so that the app acts on the very path the policy allowed (`/public/../admin` reaches it as
    `/admin`, which an ALLOW on `/public*` never allowed). False when it cannot be normalized (answered 400).
    CONNECT's authority and OPTIONS' `*` are not paths and stay as they are."""
    target = head.target
    if head.method == "CONNECT" or target == "*":
        return True
    path = normalize(target)
    if path is None:
        return False
    _, mark, query = target.partition("#")[0].partition("?")
    head.target = path + mark + query
    return True


def request_of(head: Head) -> Request:
    """The attributes authorization reads, from a request head."""
    headers: dict[str, tuple[str, ...]] = {}
    for name, value in head.headers:
        key = name.decode("latin-1").lower()
        headers[key] = (*headers.get(key, ()), value.decode("latin-1"))
    host = headers.get("host", ("",))[0]
    return Request(head.method, head.target, host, headers)


def protocol_of(head: Head) -> str:
    content_type = head.get(b"content-type") or b""
    return "grpc" if content_type.startswith(b"application/grpc") else "http"


def record(
    metrics: Metrics,
    exchange: Exchange,
    call: Call | None,
    reporters: tuple[str, ...],
    downstream: str,
    fallback_source: Peer,
) -> None:
    """Count a finished request for each reporter (`source`, `destination`) and write its access log line."""
    head = exchange.head
    source = call.source if call is not None else fallback_source
    destination = call.destination if call is not None else Peer()
    service = call.service if call is not None else None
    mutual_tls = call.mutual_tls if call is not None else False
    protocol = protocol_of(head)
    for reporter in reporters:
        labels = request_labels(
            reporter, source, destination, service, mutual_tls, exchange.status, exchange.flags, "", protocol
        )
        metrics.request_done(labels, exchange.duration_ms, exchange.request_bytes, exchange.response_bytes)
    if not ACCESS_LOG.enabled:
        return
    user_agent = head.get(b"user-agent") or b""
    ACCESS_LOG.request(
        RequestRecord(
            start=exchange.started,
            duration_ms=exchange.duration_ms,
            method=head.method,
            path=head.target,
            protocol=f"HTTP/{head.version}",
            response_code=exchange.status,
            reporter=reporters[0] if reporters else "",
            source=source,
            destination=destination,
            response_flags=exchange.flags,
            bytes_received=exchange.request_bytes,
            bytes_sent=exchange.response_bytes,
            upstream_host=exchange.upstream,
            downstream_remote_address=downstream,
            authority=(head.get(b"host") or b"").decode("latin-1"),
            user_agent=user_agent.decode("latin-1"),
            x_request_id=call.request_id if call is not None else "",
            trace=call.trace if call is not None else None,
            decision=call.decision if call is not None else "",
            policy=call.policy if call is not None else "",
            audit=call.audit if call is not None else False,
            extra={"detail": exchange.detail} if exchange.detail else {},
        )
    )


def labels_of(workload_labels: Mapping[str, str] | None) -> Mapping[str, str]:
    return workload_labels if workload_labels is not None else {}
