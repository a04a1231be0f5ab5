"""Control's Prometheus metrics, in a registry of its own (so tests can run several controls in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ControlMetrics:
    """Every metric control exports on 15014 /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected_proxies = Gauge(
            "meshlet_control_connected_proxies", "Node proxies connected to the config stream", registry=r
        )
        self.pushes = Counter("meshlet_control_pushes", "Config messages sent to proxies", ["type"], registry=r)
        self.acks = Counter("meshlet_control_acks", "Config versions acknowledged by proxies", registry=r)
        self.rejects = Counter(
            "meshlet_control_rejects", "Config versions rejected (nacked) by proxies", ["node"], registry=r
        )
        self.slow_disconnects = Counter(
            "meshlet_control_slow_client_disconnects", "Proxies dropped for not reading their stream", registry=r
        )
        self.certs_issued = Counter("meshlet_control_certificates_issued", "Workload certificates signed", registry=r)
        self.certs_refused = Counter(
            "meshlet_control_certificates_refused", "Certificate requests refused", ["reason"], registry=r
        )
        self.node_auth_refused = Counter(
            "meshlet_control_node_auth_refused",
            "Requests on the node port refused because they did not prove a node (token or certificate)",
            ["reason"],
            registry=r,
        )
        self.config_version = Gauge("meshlet_control_config_version", "Current config version", registry=r)
        self.config_errors = Gauge(
            "meshlet_control_config_errors", "Objects or files currently rejected by validation", registry=r
        )
        self.config_warnings = Gauge(
            "meshlet_control_config_warnings",
            "Valid objects that will not do what they look meant to (see /debug/status warnings)",
            registry=r,
        )
        self.objects = Gauge("meshlet_control_objects", "Valid objects in the store", ["kind"], registry=r)
