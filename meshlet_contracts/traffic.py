"""TrafficPolicy (`networking.meshlet.io/v1`) in proxy-ready form: the one definition control and ztunnel share.

The spec's field names are Istio's DestinationRule `trafficPolicy` (loadBalancer, connectionPool,
outlierDetection) plus meshlet's own local `rateLimit`, with a `targetRef` naming the Service (and optionally the
port) it applies to. `parse_spec` checks a spec strictly and is used on both sides: control on the user's object
(its errors are then prefixed with `spec.`), ztunnel on the wire item, whose shape is the same spec in canonical
form (defaults filled in, durations normalized, `null` for an absent section). Strict, because a misspelt
`maxEjectionPercnt` silently dropped would let a circuit breaker eject every endpoint.

Durations are written as Istio writes them (`10s`, `1m`, `500ms`, `1h30m`) and held as float seconds; they must be
whole milliseconds, which is what Envoy keeps too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from meshlet_contracts.config_items import (
    ConnectionPoolItem,
    ConsistentHashItem,
    ItemError,
    LoadBalancerItem,
    OutlierDetectionItem,
    RateLimitItem,
    TargetRefItem,
    TrafficPolicyItem,
    boolean,
    mapping,
    opt_str,
    port,
    req_str,
    within,
)
from meshlet_contracts.policy import PolicyError
from meshlet_contracts.spec_checks import count, format_duration, is_prime, known, parse_duration

Simple = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]
Unit = Literal["second", "minute", "hour"]
SIMPLE: tuple[Simple, ...] = get_args(Simple)
UNIT_SECONDS: dict[Unit, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0}

DEFAULT_RING_SIZE = 1024
"""Envoy's default minimum ring size."""
MAX_RING_SIZE = 1 << 20
"""Rings are rebuilt in Python on every endpoint change: beyond this the rebuild costs more than it buys."""
DEFAULT_MAGLEV_SIZE = 65537
MAX_MAGLEV_SIZE = 1_000_003


class TrafficPolicyError(PolicyError):
    """A TrafficPolicy does not follow the schema; `field` is the path within the spec, `policy` names it once
    known (`TrafficPolicy shop/web: outlierDetection.interval: ...`)."""


@dataclass(frozen=True, slots=True)
class TargetRef:
    """The Service of the policy's namespace it applies to; `port` None means every port."""

    name: str
    port: int | None = None


@dataclass(frozen=True, slots=True)
class HttpCookie:
    name: str
    path: str = ""
    ttl: float | None = None
    """Seconds; None: a session cookie."""


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """Exactly one key source (header, cookie or source IP); a ring of at least `minimum_ring_size` entries, or
    Maglev with a prime `table_size`."""

    http_header_name: str = ""
    http_cookie: HttpCookie | None = None
    use_source_ip: bool = False
    maglev: bool = False
    minimum_ring_size: int = DEFAULT_RING_SIZE
    table_size: int = DEFAULT_MAGLEV_SIZE


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """`simple` or `consistent_hash`, never both."""

    simple: Simple | None = None
    consistent_hash: ConsistentHash | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    """Limits per upstream cluster (the target Service); None is unlimited."""

    max_connections: int | None = None
    http1_max_pending_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Istio's defaults; an error count of 0 disables that kind of ejection."""

    consecutive_5xx_errors: int = 5
    consecutive_gateway_errors: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket of `burst` tokens refilled at `requests_per_unit` per `unit`; one per source identity when
    `per_source_identity`; only for the named HTTPRoute when `route` is set."""

    requests_per_unit: int
    unit: Unit = "second"
    burst: int = 0
    """The bucket's size; 0 reads as `requests_per_unit` (the parser always fills it in)."""
    per_source_identity: bool = False
    route: str = ""

    @property
    def capacity(self) -> int:
        return self.burst or self.requests_per_unit

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.requests_per_unit / UNIT_SECONDS[self.unit]


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    name: str
    namespace: str
    target: TargetRef
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    rate_limit: RateLimit | None = None
    created: str = ""
    """metadata.creationTimestamp (RFC 3339, "" when unknown): the oldest of two policies for a target wins."""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def service(self) -> str:
        """`namespace/name` of the target Service."""
        return f"{self.namespace}/{self.target.name}"

    def precedence(self) -> tuple[bool, str, str, str]:
        """Sort key: older first (timestamped before unknown), then by namespace and name, as Istio orders."""
        return (not self.created, self.created, self.namespace, self.name)

    def to_wire(self) -> TrafficPolicyItem:
        target: TargetRefItem = {"kind": "Service", "name": self.target.name, "port": self.target.port}
        return {
            "name": self.name,
            "namespace": self.namespace,
            "creationTimestamp": self.created,
            "targetRef": target,
            "loadBalancer": None if self.load_balancer is None else _lb_wire(self.load_balancer),
            "connectionPool": None if self.connection_pool is None else _pool_wire(self.connection_pool),
            "outlierDetection": None if self.outlier_detection is None else _outlier_wire(self.outlier_detection),
            "rateLimit": None if self.rate_limit is None else _rate_wire(self.rate_limit),
        }

    @classmethod
    def from_wire(cls, item: object) -> TrafficPolicy:
        try:
            raw = mapping(item, "")
            name, namespace = req_str(raw, "name"), req_str(raw, "namespace")
        except ItemError as exc:
            raise TrafficPolicyError(exc.field, exc.reason, "TrafficPolicy") from None
        try:
            created = opt_str(raw, "creationTimestamp")
            spec = {k: v for k, v in raw.items() if k not in ("name", "namespace", "creationTimestamp")}
            return parse_spec(name, namespace, spec, created)
        except ItemError as exc:
            raise TrafficPolicyError(exc.field, exc.reason, f"TrafficPolicy {namespace}/{name}") from None


SPEC_FIELDS = ("targetRef", "loadBalancer", "connectionPool", "outlierDetection", "rateLimit")


def parse_spec(name: str, namespace: str, spec: Mapping[str, Any], created: str = "") -> TrafficPolicy:
    """A spec (the user's, or the wire's canonical one) checked strictly; errors name the field in the spec."""
    known(spec, SPEC_FIELDS)
    if spec.get("targetRef") is None:
        raise TrafficPolicyError("targetRef", "required: name the Service, as in targetRef: {kind: Service, name: web}")
    sections: dict[str, Any] = {}
    for key, parse in (
        ("targetRef", _target),
        ("loadBalancer", _load_balancer),
        ("connectionPool", _connection_pool),
        ("outlierDetection", _outlier),
        ("rateLimit", _rate_limit),
    ):
        if spec.get(key) is not None:
            with within(key):
                sections[key] = parse(mapping(spec[key], ""))
    return TrafficPolicy(
        name,
        namespace,
        sections["targetRef"],
        sections.get("loadBalancer"),
        sections.get("connectionPool"),
        sections.get("outlierDetection"),
        sections.get("rateLimit"),
        created,
    )


def _duration(raw: Mapping[str, Any], key: str, default: float | None) -> float | None:
    return default if raw.get(key) is None else parse_duration(raw[key], key)


def _target(raw: Mapping[str, Any]) -> TargetRef:
    known(raw, ("group", "kind", "name", "port"))
    if raw.get("group") not in (None, ""):
        raise TrafficPolicyError("group", f'expected the core group "" (a Service), got {raw["group"]!r}')
    if raw.get("kind", "Service") != "Service":
        raise TrafficPolicyError("kind", f"only a Service can be targeted, got {raw['kind']!r}")
    return TargetRef(req_str(raw, "name"), None if raw.get("port") is None else port(raw["port"], "port"))


def _load_balancer(raw: Mapping[str, Any]) -> LoadBalancer:
    known(raw, ("simple", "consistentHash"))
    simple, hashed = raw.get("simple"), raw.get("consistentHash")
    if (simple is None) == (hashed is None):
        raise TrafficPolicyError("", "set exactly one of simple and consistentHash")
    if hashed is not None:
        with within("consistentHash"):
            return LoadBalancer(consistent_hash=_consistent_hash(mapping(hashed, "")))
    if simple == "LEAST_CONN":  # Istio's deprecated name for the same algorithm
        simple = "LEAST_REQUEST"
    if simple not in SIMPLE:
        raise TrafficPolicyError("simple", f"expected one of {', '.join(SIMPLE)}, got {simple!r}")
    return LoadBalancer(simple=cast(Simple, simple))


def _consistent_hash(raw: Mapping[str, Any]) -> ConsistentHash:
    known(raw, ("httpHeaderName", "httpCookie", "useSourceIp", "ringHash", "maglev"))
    header = opt_str(raw, "httpHeaderName")
    use_source_ip = boolean(raw, "useSourceIp", False)
    cookie = None
    if raw.get("httpCookie") is not None:
        with within("httpCookie"):
            cookie_raw = mapping(raw["httpCookie"], "")
            known(cookie_raw, ("name", "path", "ttl"))
            ttl = _duration(cookie_raw, "ttl", None)
            cookie = HttpCookie(req_str(cookie_raw, "name"), opt_str(cookie_raw, "path"), ttl)
    if sum((bool(header), cookie is not None, use_source_ip)) != 1:
        raise TrafficPolicyError("", "set exactly one of httpHeaderName, httpCookie and useSourceIp: true")
    if raw.get("ringHash") is not None and raw.get("maglev") is not None:
        raise TrafficPolicyError("", "set at most one of ringHash and maglev")
    ring_size, table_size = DEFAULT_RING_SIZE, DEFAULT_MAGLEV_SIZE
    if raw.get("ringHash") is not None:
        with within("ringHash"):
            ring = mapping(raw["ringHash"], "")
            known(ring, ("minimumRingSize",))
            ring_size = count(ring, "minimumRingSize", 1, MAX_RING_SIZE) or DEFAULT_RING_SIZE
    if raw.get("maglev") is not None:
        with within("maglev"):
            maglev = mapping(raw["maglev"], "")
            known(maglev, ("tableSize",))
            table_size = count(maglev, "tableSize", 2, MAX_MAGLEV_SIZE) or DEFAULT_MAGLEV_SIZE
            if not is_prime(table_size):
                raise TrafficPolicyError(
                    "tableSize", f"{table_size} is not a prime number (Maglev needs one; 65537 is)"
                )
    return ConsistentHash(header, cookie, use_source_ip, raw.get("maglev") is not None, ring_size, table_size)


def _connection_pool(raw: Mapping[str, Any]) -> ConnectionPool:
    known(raw, ("tcp", "http"))
    tcp: Mapping[str, Any] = {}
    http: Mapping[str, Any] = {}
    if raw.get("tcp") is not None:
        tcp = mapping(raw["tcp"], "tcp")
        with within("tcp"):
            known(tcp, ("maxConnections",))
    if raw.get("http") is not None:
        http = mapping(raw["http"], "http")
        with within("http"):
            known(http, ("http1MaxPendingRequests", "maxRequestsPerConnection", "maxRetries"))
    with within("tcp"):
        max_connections = count(tcp, "maxConnections")
    with within("http"):
        pending = count(http, "http1MaxPendingRequests", 0)
        per_connection = count(http, "maxRequestsPerConnection", 0)
        retries = count(http, "maxRetries", 0)
    # As in Istio, 0 requests per connection means no limit.
    return ConnectionPool(max_connections, pending, per_connection or None, retries)


def _outlier(raw: Mapping[str, Any]) -> OutlierDetection:
    known(
        raw, ("consecutive5xxErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime", "maxEjectionPercent")
    )
    d = OutlierDetection()
    five = count(raw, "consecutive5xxErrors", 0)
    gateway = count(raw, "consecutiveGatewayErrors", 0)
    percent = count(raw, "maxEjectionPercent", 0, 100)
    return OutlierDetection(
        d.consecutive_5xx_errors if five is None else five,
        d.consecutive_gateway_errors if gateway is None else gateway,
        _duration(raw, "interval", d.interval) or d.interval,
        _duration(raw, "baseEjectionTime", d.base_ejection_time) or d.base_ejection_time,
        d.max_ejection_percent if percent is None else percent,
    )


def _rate_limit(raw: Mapping[str, Any]) -> RateLimit:
    known(raw, ("requestsPerUnit", "unit", "burst", "perSourceIdentity", "route"))
    rate = count(raw, "requestsPerUnit")
    if rate is None:
        raise TrafficPolicyError("requestsPerUnit", "required: how many requests per unit, as in requestsPerUnit: 10")
    unit = (opt_str(raw, "unit") or "second").lower()
    if unit not in UNIT_SECONDS:
        raise TrafficPolicyError("unit", f"expected one of second, minute, hour, got {raw['unit']!r}")
    return RateLimit(
        rate,
        unit,
        count(raw, "burst") or rate,
        boolean(raw, "perSourceIdentity", False),
        opt_str(raw, "route"),
    )


def _lb_wire(lb: LoadBalancer) -> LoadBalancerItem:
    if lb.consistent_hash is None:
        return {"simple": lb.simple}
    h = lb.consistent_hash
    hashed: ConsistentHashItem = {}
    if h.http_header_name:
        hashed["httpHeaderName"] = h.http_header_name
    if h.http_cookie is not None:
        c = h.http_cookie
        hashed["httpCookie"] = {
            "name": c.name,
            "path": c.path,
            "ttl": None if c.ttl is None else format_duration(c.ttl),
        }
    if h.use_source_ip:
        hashed["useSourceIp"] = True
    if h.maglev:
        hashed["maglev"] = {"tableSize": h.table_size}
    else:
        hashed["ringHash"] = {"minimumRingSize": h.minimum_ring_size}
    return {"consistentHash": hashed}


def _pool_wire(pool: ConnectionPool) -> ConnectionPoolItem:
    return {
        "tcp": {"maxConnections": pool.max_connections},
        "http": {
            "http1MaxPendingRequests": pool.http1_max_pending_requests,
            "maxRequestsPerConnection": pool.max_requests_per_connection,
            "maxRetries": pool.max_retries,
        },
    }


def _outlier_wire(o: OutlierDetection) -> OutlierDetectionItem:
    return {
        "consecutive5xxErrors": o.consecutive_5xx_errors,
        "consecutiveGatewayErrors": o.consecutive_gateway_errors,
        "interval": format_duration(o.interval),
        "baseEjectionTime": format_duration(o.base_ejection_time),
        "maxEjectionPercent": o.max_ejection_percent,
    }


def _rate_wire(r: RateLimit) -> RateLimitItem:
    return {
        "requestsPerUnit": r.requests_per_unit,
        "unit": r.unit,
        "burst": r.capacity,
        "perSourceIdentity": r.per_source_identity,
        "route": r.route,
    }
