"""ztunnel's Prometheus metrics, with Istio's standard names and labels so existing dashboards work.

TCP metrics are reported by each side of a tunnel (`reporter="source"` by the client's node proxy,
`"destination"` by the server's), with Istio's full standard label set in Istio's order: both workloads with
their canonical service and revision, app, version, principal and cluster, the service addressed, and
`connection_security_policy` (`mutual_tls` over HBONE, `unknown` for plaintext, as Istio's ztunnel says).
`response_flags` follows Istio's ztunnel too: `DENY` for a connection an authorization policy refused,
`CONNECT` for one whose upstream could not be reached, `-` otherwise; such a connection is counted as opened
and closed. A connection's label set is computed once when it opens; counters are plain dict entries, so the
data path pays one dict update per event. Bytes are added when a connection closes, as Istio's ztunnel does,
with Istio's meaning: sent = the response (destination to source), received = the request.

Request metrics (`istio_requests_total` and the duration/size histograms) are recorded by the L7 engine
through `request_done`, one call per request: a counter entry and three bucket arrays per label set.

The text itself is prometheus_client's: a collector turns the dicts (and the node-level values other parts
register with `gauge`/`counter`, read at scrape time) into metric families in this process's own registry,
beside prometheus_client's process collector, and `generate_latest` writes them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from meshlet_contracts import build

PEER_LABELS = (
    "workload",
    "canonical_service",
    "canonical_revision",
    "workload_namespace",
    "principal",
    "app",
    "version",
    "cluster",
)
TCP_LABELS = (
    "reporter",
    *(f"source_{name}" for name in PEER_LABELS),
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    *(f"destination_{name}" for name in PEER_LABELS),
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)
"""Istio's standard TCP labels, in the order of Istio's "Istio Standard Metrics"."""
REQUEST_LABELS = (
    *TCP_LABELS[: TCP_LABELS.index("request_protocol") + 1],
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
"""Istio's standard request labels: the TCP set plus the response code and gRPC status."""
Labels = tuple[str, ...]
"""Values in the order of TCP_LABELS (or REQUEST_LABELS for request metrics)."""
UNKNOWN = "unknown"
DEFAULT_CLUSTER = "Kubernetes"
"""Istio's default cluster id."""
NO_FLAGS, DENY, CONNECT = "-", "DENY", "CONNECT"
"""response_flags values: none, denied by authorization policy, upstream connect failed."""

DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                    1800000, 3600000)  # fmt: skip
"""Istio's default buckets of istio_request_duration_milliseconds."""
SIZE_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)
LAG_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
"""Seconds for `meshlet_event_loop_lag_seconds` (libuv's timers are in milliseconds: 1 ms late is no lag)."""
"""Istio's default buckets of istio_request_bytes and istio_response_bytes."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a connection as metrics name it (Istio's source_*/destination_* values)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    principal: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN
    cluster: str = UNKNOWN

    def values(self) -> Labels:
        """Values in the order of PEER_LABELS."""
        return (
            self.workload,
            self.canonical_service,
            self.canonical_revision,
            self.namespace,
            self.principal,
            self.app,
            self.version,
            self.cluster,
        )


def canonical_service(labels: Mapping[str, str], workload_name: str) -> str:
    """Istio's canonical service of a pod: its canonical-name label, else its app name label, else the workload."""
    for key in ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app"):
        if value := labels.get(key):
            return value
    return workload_name


def canonical_revision(labels: Mapping[str, str]) -> str:
    """Istio's canonical revision of a pod: its canonical-revision label, else its version label, else `latest`."""
    for key in ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"):
        if value := labels.get(key):
            return value
    return "latest"


def _head(reporter: str, source: Peer, destination: Peer, service: tuple[str, str] | None) -> Labels:
    svc_ns, svc_name = service if service is not None else (UNKNOWN, UNKNOWN)
    host = f"{svc_name}.{svc_ns}.svc.cluster.local" if service is not None else UNKNOWN
    return (reporter, *source.values(), host, svc_ns, svc_name, *destination.values())


def tcp_labels(
    reporter: str,
    source: Peer,
    destination: Peer,
    service: tuple[str, str] | None,
    mutual_tls: bool,
    flags: str = NO_FLAGS,
) -> Labels:
    """The label values of one connection; `service` is (namespace, name) when it was addressed by VIP."""
    return (*_head(reporter, source, destination, service), "tcp", flags, "mutual_tls" if mutual_tls else UNKNOWN)


def request_labels(
    reporter: str,
    source: Peer,
    destination: Peer,
    service: tuple[str, str] | None,
    mutual_tls: bool,
    response_code: int,
    flags: str = NO_FLAGS,
    grpc_status: str = "",
    protocol: str = "http",
) -> Labels:
    """The label values of one request (REQUEST_LABELS); `protocol` is `http`, or `grpc` for gRPC requests,
    `grpc_status` the grpc-status the response carried ("" when none)."""
    return (
        *_head(reporter, source, destination, service),
        protocol,
        str(response_code),
        grpc_status,
        flags,
        "mutual_tls" if mutual_tls else UNKNOWN,
    )


def request_protocol(content_type: str | None) -> str:
    """Istio's request_protocol of an HTTP request: `grpc` when its content-type is gRPC's (`application/grpc`,
    `application/grpc+<codec>`, as Envoy tells; gRPC-Web is not gRPC), else `http`."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return "grpc" if media == "application/grpc" or media.startswith("application/grpc+") else "http"


def with_flags(labels: Labels, flags: str) -> Labels:
    """`labels` (a TCP label set) with response_flags set to `flags`."""
    return (*labels[:-2], flags, labels[-1])


class Histogram:
    """Observations of one label set: a count per bucket (not cumulative; the last is +Inf) and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)
        self.sum = 0.0


Reading = tuple[str, str, Callable[[], float]]
"""A value kept elsewhere, exported as a metric: (counter|gauge, help text, read it now)."""


class Metrics:
    """Counters by label set, exported through a prometheus_client collector in a registry of their own."""

    def __init__(self, cluster: str = DEFAULT_CLUSTER, version: str = "") -> None:
        self.cluster = cluster
        """This mesh's cluster id, the source_cluster/destination_cluster of its workloads."""
        self.version = version or _meshlet_version()
        self.opened: defaultdict[Labels, int] = defaultdict(int)
        self.closed: defaultdict[Labels, int] = defaultdict(int)
        self.sent: defaultdict[Labels, int] = defaultdict(int)
        self.received: defaultdict[Labels, int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(direction, reason) -> connections that failed before or while relaying."""
        self.decisions: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(direction, allow|deny) -> authorization decisions."""
        self.identity_mismatches = 0
        """Connections whose authenticated identity was not that of the workload at their source IP."""
        self.traffic: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        """(event, service namespace, service name, kind) -> traffic-management decisions (`TRAFFIC_EVENTS`)."""
        self.requests: defaultdict[Labels, int] = defaultdict(int)
        self.durations: dict[Labels, Histogram] = {}
        self.request_sizes: dict[Labels, Histogram] = {}
        self.response_sizes: dict[Labels, Histogram] = {}
        self.loop_lag = Histogram(len(LAG_BUCKETS))
        """How late the event loop ran a timer (`observe.loop_lag`): what a request waits for besides its own I/O."""
        self.readings: dict[str, Reading] = {}
        """Node-level values by exposed name, read at each scrape."""
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    def connection_closed(self, labels: Labels, sent: int, received: int) -> None:
        self.closed[labels] += 1
        self.sent[labels] += sent
        self.received[labels] += received

    def request_done(self, labels: Labels, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        """Count one finished request (labels from `request_labels`) and observe its duration and sizes."""
        self.requests[labels] += 1
        _observe(self.durations, labels, DURATION_BUCKETS, duration_ms)
        _observe(self.request_sizes, labels, SIZE_BUCKETS, request_bytes)
        _observe(self.response_sizes, labels, SIZE_BUCKETS, response_bytes)

    def loop_lagged(self, seconds: float) -> None:
        self.loop_lag.counts[bisect_left(LAG_BUCKETS, seconds)] += 1
        self.loop_lag.sum += seconds

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Export `read()` as gauge `name` (replacing any reading of that name)."""
        if name.endswith("_total"):
            raise ValueError(f"`_total` marks a counter, not a gauge: {name}")
        self.readings[name] = ("gauge", help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Export `read()` (a count that only grows) as counter `name`, which ends in `_total`."""
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name}")
        self.readings[name] = ("counter", help_text, read)

    def render(self) -> str:
        """The Prometheus text format (0.0.4) of every metric."""
        return generate_latest(self.registry).decode()


def _observe(series: dict[Labels, Histogram], labels: Labels, bounds: tuple[float, ...], value: float) -> None:
    hist = series.get(labels)
    if hist is None:
        hist = series[labels] = Histogram(len(bounds))
    hist.counts[bisect_left(bounds, value)] += 1  # `le` is inclusive: the first bound >= value
    hist.sum += value


def _meshlet_version() -> str:
    return build.version()


class _Collector:
    """Builds the metric families from a `Metrics` at each scrape (a prometheus_client `Collector`)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        tcp = (
            ("istio_tcp_connections_opened_total", "Connections opened.", m.opened),
            ("istio_tcp_connections_closed_total", "Connections closed.", m.closed),
            ("istio_tcp_sent_bytes_total", "Bytes sent during the response (destination to source).", m.sent),
            (
                "istio_tcp_received_bytes_total",
                "Bytes received during the request (source to destination).",
                m.received,
            ),
        )
        # A counter family's name is given with `_total`: prometheus_client takes it off the family and puts it
        # back on the samples, so the exposed names are the ones above.
        for name, help_text, series in tcp:
            family = CounterMetricFamily(name, help_text, labels=TCP_LABELS)
            for labels, value in sorted(series.items()):
                family.add_metric(labels, value)
            yield family
        requests = CounterMetricFamily("istio_requests_total", "Requests served.", labels=REQUEST_LABELS)
        for labels, value in sorted(m.requests.items()):
            requests.add_metric(labels, value)
        yield requests
        histograms = (
            ("istio_request_duration_milliseconds", "Request duration in milliseconds.", m.durations, DURATION_BUCKETS),
            ("istio_request_bytes", "Request sizes in bytes.", m.request_sizes, SIZE_BUCKETS),
            ("istio_response_bytes", "Response sizes in bytes.", m.response_sizes, SIZE_BUCKETS),
        )
        for name, help_text, hists, bounds in histograms:
            yield _histogram(name, help_text, hists, bounds)
        lag = HistogramMetricFamily(
            "meshlet_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 100 ms: the time requests waited for the loop (busy, or "
            "waiting for a CPU or the GIL).",
        )
        lag.add_metric((), _buckets(m.loop_lag, LAG_BUCKETS), m.loop_lag.sum)
        yield lag
        pairs = (
            (
                "meshlet_connection_errors_total",
                "Connections that failed, by direction and reason.",
                "reason",
                m.errors,
            ),
            ("meshlet_authorization_decisions_total", "L4 authorization decisions.", "decision", m.decisions),
        )
        for name, help_text, second, counts in pairs:
            family = CounterMetricFamily(name, help_text, labels=("direction", second))
            for key, value in sorted(counts.items()):
                family.add_metric(key, value)
            yield family
        yield CounterMetricFamily(
            "meshlet_source_identity_mismatch_total",
            "Connections whose authenticated identity is not that of the workload at their source IP.",
            m.identity_mismatches,
        )
        yield from _traffic(m.traffic)
        build = GaugeMetricFamily("istio_build", "Istio component build info.", labels=("component", "tag"))
        build.add_metric(("ztunnel", m.version), 1)
        yield build
        for name, (kind, help_text, read) in sorted(m.readings.items()):
            family_of = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family_of(name, help_text, read())


TRAFFIC_EVENTS = {
    "retries": ("meshlet_upstream_retries_total", "Requests tried again (HTTPRoute retry), by backend Service."),
    "ejections": ("meshlet_outlier_ejections_total", "Endpoints ejected by outlier detection, by Service."),
    "rate_limited": ("meshlet_rate_limited_total", "Requests answered 429 by a local rate limit, by Service."),
    "overflows": (
        "meshlet_upstream_overflows_total",
        "Requests (or TCP connections) refused by a connection pool limit, by Service and kind "
        "(connections, pending, retries).",
    ),
    "mirrors": (
        "meshlet_mirrored_requests_total",
        "Copies of requests for an HTTPRoute RequestMirror, by mirror Service and kind (sent, failed, dropped, "
        "skipped: a request with a body).",
    ),
}
"""The traffic-management counters: `Metrics.traffic` event -> (exposed name, help)."""
_KINDED = frozenset({"overflows", "mirrors"})


def _traffic(counts: Mapping[tuple[str, str, str, str], int]) -> Iterator[Metric]:
    service = ("destination_service_namespace", "destination_service_name")
    for event, (name, help_text) in TRAFFIC_EVENTS.items():
        kinds = event in _KINDED
        family = CounterMetricFamily(name, help_text, labels=(*service, "kind") if kinds else service)
        for (kind, namespace, svc, detail), value in sorted(counts.items()):
            if kind == event:
                family.add_metric((namespace, svc, detail) if kinds else (namespace, svc), value)
        yield family


def _histogram(name: str, help_text: str, hists: dict[Labels, Histogram], bounds: tuple[float, ...]) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=REQUEST_LABELS)
    for labels, hist in sorted(hists.items()):
        family.add_metric(labels, _buckets(hist, bounds), hist.sum)
    return family


def _buckets(hist: Histogram, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, +Inf last."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for edge, count in zip([*(str(float(b)) for b in bounds), "+Inf"], hist.counts, strict=True):
        cumulative += count
        buckets.append((edge, cumulative))
    return buckets
