"""One way to reach the Kubernetes API server, for control, the agent and the CLI: a kubeconfig or in-cluster.

`load_client(path)` returns a configured official `kubernetes` ApiClient: from the kubeconfig at `path` when
given, else from the service account Kubernetes mounts into every pod (in-cluster), else from `$KUBECONFIG` or
`~/.kube/config` as kubectl would. When none works the error says what was tried, so a user knows which to fix.
Each caller gets its own client (its own connection pool): the client is used from worker threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubeConfigError(RuntimeError):
    """No usable way to reach the API server; the message names what was tried."""


def _default_kubeconfig() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = env.split(os.pathsep)[0] if env else ""
    return Path(first) if first else Path.home() / ".kube" / "config"


def load_client(kubeconfig: Path | None = None) -> Any:
    """An ApiClient for the cluster (see the module docstring for the order things are tried in)."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        try:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            raise KubeConfigError(f"kubeconfig {kubeconfig}: {exc}") from None
        return client.ApiClient(configuration)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.is_file():
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException as exc:
            raise KubeConfigError(f"in-cluster configuration: {exc}") from None
        return client.ApiClient(configuration)
    fallback = _default_kubeconfig()
    if not fallback.is_file():
        raise KubeConfigError(
            f"no kubeconfig given, not running in a pod (no {IN_CLUSTER_TOKEN}), and {fallback} does not exist"
        )
    return load_client(fallback)


def have_kubeconfig() -> bool:
    """Whether a cluster is reachable the way kubectl would find one (for commands that work both ways)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) or _default_kubeconfig().is_file()
