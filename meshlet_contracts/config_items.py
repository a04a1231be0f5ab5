"""The config stream's items, one definition per collection: the JSON shape control writes and ztunnel reads.

Each kind is a TypedDict with the keys as they are on the wire (camelCase, as in Istio's API), so control builds
items through these types and a reader sees every key it may use in one place. The wire format is the contract
with peers of other versions: keys are only ever added, and a reader ignores workload and service keys it does
not know. (Policy items are the exception: their reader refuses unknown keys, see `meshlet_contracts.policy`.)

`parse_workload` and `parse_service` check one raw item and return it typed, raising `ItemError` naming the
offending field (`endpoints[0].ports.80: expected a port number in 1..65535, got 'x'`); ztunnel calls them once,
at its edge, before converting the item into its domain objects. The check helpers are shared with the policy
parser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NotRequired, TypedDict, TypeVar

T = TypeVar("T")


class WorkloadItem(TypedDict):
    """`workloads`, keyed by `uid`: one pod, enrolled in the mesh or not."""

    uid: str
    name: str
    namespace: str
    node: NotRequired[str]
    """The node it runs on; absent or "" while unscheduled."""
    serviceAccount: str
    identity: str
    """Its SPIFFE ID (`spiffe://<td>/ns/<ns>/sa/<sa>`)."""
    ips: list[str]
    labels: NotRequired[dict[str, str]]
    enrolled: bool
    ready: NotRequired[bool]
    """Absent reads as ready (items of control versions that did not send it)."""
    workloadName: NotRequired[str]
    """Its controller's name as Istio names workloads (Deployment, StatefulSet, ...); absent reads as `name`."""


class ServicePortItem(TypedDict):
    name: NotRequired[str]
    port: int
    targetPort: NotRequired[int | str]
    """A number, or the name of a container port."""
    protocol: NotRequired[str]
    appProtocol: NotRequired[str]
    """Kubernetes' `appProtocol`; with the name it says whether the port is HTTP (`meshlet_contracts.protocols`)."""


class EndpointItem(TypedDict):
    workloadUid: str
    ip: str
    ports: dict[str, int]
    """Service port (as a string: JSON keys are strings) -> the pod's port."""
    ready: NotRequired[bool]


class ServiceItem(TypedDict):
    """`services`, keyed by `namespace/name`: VIPs, ports and the endpoints control resolved."""

    name: str
    namespace: str
    hostname: NotRequired[str]
    vips: list[str]
    ports: list[ServicePortItem]
    endpoints: list[EndpointItem]


# Policy items: built and read by `meshlet_contracts.policy`; every list is always present.
class SourceItem(TypedDict):
    """One `from` entry of a rule; principals without `spiffe://`, IP blocks as normalized CIDR strings."""

    principals: list[str]
    notPrincipals: list[str]
    requestPrincipals: list[str]
    notRequestPrincipals: list[str]
    namespaces: list[str]
    notNamespaces: list[str]
    ipBlocks: list[str]
    notIpBlocks: list[str]
    remoteIpBlocks: list[str]
    notRemoteIpBlocks: list[str]


class OperationItem(TypedDict):
    """One `to` entry of a rule; ports as numbers."""

    hosts: list[str]
    notHosts: list[str]
    ports: list[int]
    notPorts: list[int]
    methods: list[str]
    notMethods: list[str]
    paths: list[str]
    notPaths: list[str]


class ConditionItem(TypedDict):
    """One `when` entry; IP keys hold CIDR strings, destination.port digits."""

    key: str
    values: list[str]
    notValues: list[str]


# `from` is a keyword, hence the functional form.
RuleItem = TypedDict("RuleItem", {"from": list[SourceItem], "to": list[OperationItem], "when": list[ConditionItem]})


class AuthorizationPolicyItem(TypedDict):
    """`authorization_policies`, keyed by `namespace/name`: Istio's policy, validated and in proxy-ready form."""

    name: str
    namespace: str
    selector: dict[str, str] | None
    """matchLabels; None selects every workload of the namespace (of the mesh, in the root namespace)."""
    action: str
    rules: list[RuleItem]
    needsL7: bool
    """Informational (shown by `meshlet policies`); the proxy works it out from the rules."""


class PeerAuthenticationItem(TypedDict):
    """`peer_authentications`, keyed by `namespace/name`."""

    name: str
    namespace: str
    selector: dict[str, str] | None
    mode: str
    portModes: dict[str, str]
    """Port (as a string) -> mode, for the selected workloads only."""


class HTTPRouteItem(TypedDict):
    """`http_routes`, keyed by `namespace/name`: a Gateway API HTTPRoute attached to Services (GAMMA), validated,
    with control's status per parent; built and read by `meshlet_contracts.routes`, which defines the nested shapes."""

    name: str
    namespace: str
    creationTimestamp: str
    """RFC 3339 UTC, "" when unknown: the older route wins a tie between matches."""
    parentRefs: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    status: list[dict[str, Any]]
    """Per parentRef: its `Accepted` and `ResolvedRefs` conditions."""


# TrafficPolicy items: built and read by `meshlet_contracts.traffic`; the spec in canonical form (defaults filled in,
# durations normalized), null for an absent section.
class TargetRefItem(TypedDict):
    kind: str
    name: str
    port: int | None


class HttpCookieItem(TypedDict):
    name: str
    path: str
    ttl: str | None


class ConsistentHashItem(TypedDict, total=False):
    """One of the key sources, and one of ringHash / maglev."""

    httpHeaderName: str
    httpCookie: HttpCookieItem
    useSourceIp: bool
    ringHash: dict[str, int]
    maglev: dict[str, int]


class LoadBalancerItem(TypedDict, total=False):
    simple: str | None
    consistentHash: ConsistentHashItem


class ConnectionPoolItem(TypedDict):
    tcp: dict[str, int | None]
    http: dict[str, int | None]


class OutlierDetectionItem(TypedDict):
    consecutive5xxErrors: int
    consecutiveGatewayErrors: int
    interval: str
    baseEjectionTime: str
    maxEjectionPercent: int


class RateLimitItem(TypedDict):
    requestsPerUnit: int
    unit: str
    burst: int
    perSourceIdentity: bool
    route: str


class TrafficPolicyItem(TypedDict):
    """`traffic_policies`, keyed by `namespace/name`: meshlet's TrafficPolicy, validated."""

    name: str
    namespace: str
    creationTimestamp: str
    """RFC 3339 UTC, "" when unknown: the older of two policies for one target wins."""
    targetRef: TargetRefItem
    loadBalancer: LoadBalancerItem | None
    connectionPool: ConnectionPoolItem | None
    outlierDetection: OutlierDetectionItem | None
    rateLimit: RateLimitItem | None


ConfigItem = (
    WorkloadItem | ServiceItem | AuthorizationPolicyItem | PeerAuthenticationItem | HTTPRouteItem | TrafficPolicyItem
)
"""An item of any collection of `meshlet_contracts.wire.COLLECTIONS`."""


class ItemError(ValueError):
    """An item does not follow its schema. `field` is the path of the offending field ("" for the item itself)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


def parse_workload(raw: object) -> WorkloadItem:
    """`raw` checked as a workload item (optional keys filled in), or ItemError naming the field."""
    item = mapping(raw, "")
    out: WorkloadItem = {
        "uid": req_str(item, "uid"),
        "name": req_str(item, "name"),
        "namespace": req_str(item, "namespace"),
        "node": opt_str(item, "node"),
        "serviceAccount": req_str(item, "serviceAccount"),
        "identity": req_str(item, "identity"),
        "ips": list(strings(item, "ips", required=True)),
        "labels": string_map(item, "labels"),
        "enrolled": boolean(item, "enrolled", None),
        "ready": boolean(item, "ready", True),
    }
    if "workloadName" in item:
        out["workloadName"] = req_str(item, "workloadName")
    return out


def parse_service(raw: object) -> ServiceItem:
    """`raw` checked as a service item (optional keys filled in), or ItemError naming the field."""
    item = mapping(raw, "")
    return {
        "name": req_str(item, "name"),
        "namespace": req_str(item, "namespace"),
        "hostname": opt_str(item, "hostname"),
        "vips": list(strings(item, "vips", required=True)),
        "ports": list(each(item, "ports", _service_port, required=True)),
        "endpoints": list(each(item, "endpoints", _endpoint, required=True)),
    }


def _service_port(raw: object) -> ServicePortItem:
    item = mapping(raw, "")
    out: ServicePortItem = {"port": port(item.get("port"), "port")}
    if "name" in item:
        out["name"] = opt_str(item, "name")
    if "protocol" in item:
        out["protocol"] = opt_str(item, "protocol")
    if app_protocol := opt_str(item, "appProtocol"):
        out["appProtocol"] = app_protocol
    if "targetPort" in item:
        target = item["targetPort"]
        out["targetPort"] = target if isinstance(target, str) and not target.isdigit() else port(target, "targetPort")
    return out


def _endpoint(raw: object) -> EndpointItem:
    item = mapping(raw, "")
    ports = {}
    for service_port, pod_port in mapping(item.get("ports"), "ports").items():
        path = f"ports.{service_port}"
        ports[str(port(service_port, path))] = port(pod_port, path)
    return {
        "workloadUid": req_str(item, "workloadUid"),
        "ip": req_str(item, "ip"),
        "ports": ports,
        "ready": boolean(item, "ready", True),
    }


# --- checks shared by the item parsers --------------------------------------------------------------------------


@contextmanager
def within(prefix: str) -> Iterator[None]:
    """Prefix the field of an error raised inside: nested parsers name fields relative to their own object."""
    try:
        yield
    except ItemError as exc:
        raise type(exc)(f"{prefix}.{exc.field}" if exc.field else prefix, exc.reason) from None


def mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ItemError(field, f"expected a mapping, got {_type_name(value)}")
    return value


def req_str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ItemError(key, "required" if value is None else f"expected a non-empty string, got {value!r}")
    return value


def opt_str(raw: Mapping[str, Any], key: str) -> str:
    """A string that may be absent, null or empty (read as "")."""
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ItemError(key, f"expected a string, got {_type_name(value)} {value!r}")
    return value


def boolean(raw: Mapping[str, Any], key: str, default: bool | None) -> bool:
    """A boolean; when absent, `default` (None: required)."""
    value = raw.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, bool):
        raise ItemError(key, "required" if value is None else f"expected true or false, got {value!r}")
    return value


def items(raw: Mapping[str, Any], key: str, required: bool = False) -> list[Any]:
    """`raw[key]` as a list; absent or null reads as empty unless `required`."""
    value = raw.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ItemError(key, "required" if value is None else f"expected a list, got {_type_name(value)}")
    return value


def each(raw: Mapping[str, Any], key: str, convert: Callable[[object], T], required: bool = False) -> tuple[T, ...]:
    out: list[T] = []
    for i, entry in enumerate(items(raw, key, required)):
        with within(f"{key}[{i}]"):
            out.append(convert(entry))
    return tuple(out)


def strings(raw: Mapping[str, Any], key: str, required: bool = False) -> tuple[str, ...]:
    """A list of non-empty strings."""
    found = items(raw, key, required)
    for i, item in enumerate(found):
        if not isinstance(item, str) or not item:
            raise ItemError(f"{key}[{i}]", f"expected a non-empty string, got {item!r}")
    return tuple(found)


def string_map(raw: Mapping[str, Any], key: str) -> dict[str, str]:
    """A mapping of strings to strings (labels); absent or null reads as empty."""
    value = raw.get(key)
    if value is None:
        return {}
    for k, v in mapping(value, key).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ItemError(f"{key}.{k}", f"expected string keys and values, got {k!r}: {v!r}")
    return dict(value)


def port(value: object, field: str) -> int:
    """A port number in 1..65535; a string of ASCII digits is read as one (JSON object keys are strings)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():  # isdigit() alone takes '٨٠' and '²'
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ItemError(field, f"expected a port number in 1..65535, got {value!r}")
    return value


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__
