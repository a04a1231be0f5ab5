"""ztunnel's Prometheus metrics, with Istio's standard names and labels so existing dashboards work.

TCP metrics are reported by each side of a tunnel (`reporter="source"` by the client's node proxy,
`"destination"` by the server's), labelled with both workloads and principals and with
`connection_security_policy` (`mutual_tls` over HBONE, `none` for plaintext). A connection's label set
is computed once when it opens; counters are plain dict entries, so the data path pays one dict update
per event. Bytes are added when a connection closes, as Istio's ztunnel does, with Istio's meaning:
sent = the response (destination to source), received = the request (source to destination).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters by label set, rendered in the Prometheus text format on demand."""

    def __init__(self) -> None:
        self.opened: defaultdict[Labels, int] = defaultdict(int)
        self.closed: defaultdict[Labels, int] = defaultdict(int)
        self.sent: defaultdict[Labels, int] = defaultdict(int)
        self.received: defaultdict[Labels, int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(direction, reason) -> connections that failed before or while relaying."""
        self.decisions: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(direction, allow|deny) -> authorization decisions."""
        self.gauges: dict[str, float] = {}

    def connection_closed(self, labels: Labels, sent: int, received: int) -> None:
        self.closed[labels] += 1
        self.sent[labels] += sent
        self.received[labels] += received

    def render(self) -> str:
        out: list[str] = []
        tcp = (
            ("istio_tcp_connections_opened_total", "Connections opened", self.opened),
            ("istio_tcp_connections_closed_total", "Connections closed", self.closed),
            ("istio_tcp_sent_bytes_total", "Bytes sent during the response (destination to source)", self.sent),
            (
                "istio_tcp_received_bytes_total",
                "Bytes received during the request (source to destination)",
                self.received,
            ),
        )
        for name, help_text, series in tcp:
            out += [f"# HELP {name} {help_text}.", f"# TYPE {name} counter"]
            out += [f"{name}{{{_labels(zip(TCP_LABELS, k, strict=True))}}} {v}" for k, v in sorted(series.items())]
        out += ["# HELP meshlet_connection_errors_total Connections that failed, by direction and reason."]
        out += ["# TYPE meshlet_connection_errors_total counter"]
        out += [
            f'meshlet_connection_errors_total{{direction="{d}",reason="{_escape(r)}"}} {v}'
            for (d, r), v in sorted(self.errors.items())
        ]
        out += ["# HELP meshlet_authorization_decisions_total L4 authorization decisions."]
        out += ["# TYPE meshlet_authorization_decisions_total counter"]
        out += [
            f'meshlet_authorization_decisions_total{{direction="{d}",decision="{r}"}} {v}'
            for (d, r), v in sorted(self.decisions.items())
        ]
        for name, value in sorted(self.gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
