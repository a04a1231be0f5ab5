"""Control's settings, grouped, with what each is for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from control.model.mesh import MeshSettings


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Everything `python -m control serve` is told."""

    store: Path | None
    """Directory of Kubernetes-shaped YAML (the `file` source; None with the `kubernetes` source)."""
    state: Path
    """Where state that must survive a restart lives: the CA (unless plugged in) and node registrations."""
    listen: tuple[str, int] = ("127.0.0.1", 15012)
    """Config stream and CSR endpoint (HTTPS, node credential required)."""
    metrics_listen: tuple[str, int] = ("127.0.0.1", 15014)
    """Health, readiness, Prometheus metrics and /debug/status (plain HTTP)."""
    mesh: MeshSettings = field(default_factory=MeshSettings)
    cert_ttl: timedelta = timedelta(hours=24)
    ca_cert: Path | None = None
    """Plug-in CA: certificate (with `ca_key`; `ca_root` when the CA is an intermediate)."""
    ca_key: Path | None = None
    ca_root: Path | None = None
    poll_interval: float = 0.1
    """How often the file source looks for changes."""
    send_timeout: float = 10.0
    """A proxy that does not take a config message within this many seconds is disconnected."""
    source: str = "file"
    """Where the cluster's objects come from: `file` (the store directory) or `kubernetes` (the API server)."""
    kubeconfig: Path | None = None
    """With `source="kubernetes"`: the kubeconfig to use (else in-cluster, else kubectl's default)."""
    namespace: str = "meshlet-system"
    """Control's own namespace: where it publishes the mesh root (ConfigMap `meshlet-root-cert`) on Kubernetes."""
    node_namespace: str = "meshlet-system"
    """On Kubernetes, a node proxy proves its node with a token of a pod in this namespace ..."""
    node_service_account: str = "meshlet-node"
    """... running as this ServiceAccount (the DaemonSet's)."""
