"""ztunnel's Prometheus metrics, with Istio's standard names and labels so existing dashboards work.

TCP metrics are reported by each side of a tunnel (`reporter="source"` by the client's node proxy,
`"destination"` by the server's), labelled with both workloads and principals and with
`connection_security_policy` (`mutual_tls` over HBONE, `none` for plaintext). A connection's label set
is computed once when it opens; counters are plain dict entries, so the data path pays one dict update
per event. Bytes are added when a connection closes, as Istio's ztunnel does, with Istio's meaning:
sent = the response (destination to source), received = the request (source to destination).

The text itself is prometheus_client's: a collector turns the dicts (and the node-level values other parts
register with `gauge`/`counter`, read at scrape time) into metric families in this process's own registry,
and `generate_latest` writes them, so the output is what `promtool check metrics` accepts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

TCP_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)
Labels = tuple[str, ...]
"""Values in the order of TCP_LABELS."""
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a connection as metrics name it."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    principal: str = UNKNOWN
    app: str = UNKNOWN


def tcp_labels(
    reporter: str, source: Peer, destination: Peer, service: tuple[str, str] | None, mutual_tls: bool, flags: str = "-"
) -> Labels:
    """The label values of one connection; `service` is (namespace, name) when it was addressed by VIP."""
    svc_ns, svc_name = service if service is not None else (UNKNOWN, UNKNOWN)
    host = f"{svc_name}.{svc_ns}.svc.cluster.local" if service is not None else UNKNOWN
    return (
        reporter,
        source.workload,
        source.namespace,
        source.principal,
        source.app,
        destination.workload,
        destination.namespace,
        destination.principal,
        destination.app,
        host,
        svc_ns,
        svc_name,
        "tcp",
        flags,
        "mutual_tls" if mutual_tls else "none",
    )


Reading = tuple[str, str, Callable[[], float]]
"""A value kept elsewhere, exported as a metric: (counter|gauge, help text, read it now)."""


class Metrics:
    """Counters by label set, exported through a prometheus_client collector in a registry of their own."""

    def __init__(self) -> None:
        self.opened: defaultdict[Labels, int] = defaultdict(int)
        self.closed: defaultdict[Labels, int] = defaultdict(int)
        self.sent: defaultdict[Labels, int] = defaultdict(int)
        self.received: defaultdict[Labels, int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(direction, reason) -> connections that failed before or while relaying."""
        self.decisions: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(direction, allow|deny) -> authorization decisions."""
        self.readings: dict[str, Reading] = {}
        """Node-level values by exposed name, read at each scrape."""
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    def connection_closed(self, labels: Labels, sent: int, received: int) -> None:
        self.closed[labels] += 1
        self.sent[labels] += sent
        self.received[labels] += received

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
        for name, (kind, help_text, read) in sorted(m.readings.items()):
            family_of = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family_of(name, help_text, read())
