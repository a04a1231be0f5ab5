"""The benchmark's own Services in a lab: an HTTP service port for scenario E, a TCP one for C and D.

The lab's `web` Service selects every `app: web` pod of a namespace (both nodes), and ztunnel would pick
either endpoint; the benchmark wants one path, pod on node1 -> pod on node2. So, as a user would with
kubectl, it writes objects into the lab's store: the server pod gets one more label, and two Services
select it alone, with VIPs from the lab's service range (the lab's own start at .10):
- `bench-http`: port 80 named `http` (and `appProtocol: http`) -> nginx :8082. The source ztunnel
  handles it at L7 (issue #14: Istio's port naming convention), and so does the destination's.
- `bench-tcp`: port 8081 named `tcp-web` -> nginx :8081, which C and D call by the pod's IP: the only
  service port that targets :8081 is not HTTP, so C and D stay L4 by every rule of issue #14.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.bench import nginx
from tests.bench.lab import BenchError, Lab

ROLE_LABEL = "bench.meshlet.io/role"
HTTP_SERVICE, TCP_SERVICE = "bench-http", "bench-tcp"
HTTP_SERVICE_PORT = 80
HTTP_VIP_OCTET, TCP_VIP_OCTET = 200, 201
"""Last octet of the two VIPs in the lab's service /24."""


@dataclass(frozen=True, slots=True)
class BenchServices:
    """Where the benchmark's Services answer."""

    http_vip: str
    http_port: int
    tcp_vip: str
    tcp_port: int


def _vip(lab_vip: str, octet: int) -> str:
    """The lab's services live in one /24 (`10.96.<slot>.0/24`): the same network, another host."""
    return lab_vip.rsplit(".", 1)[0] + f".{octet}"


def service_objects(namespace: str, http_vip: str, tcp_vip: str) -> list[dict[str, Any]]:
    """The two Services, selecting only the pod labelled ROLE_LABEL=server."""

    def svc(name: str, vip: str, port: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": vip,
                "clusterIPs": [vip],
                "selector": {ROLE_LABEL: "server"},
                "ports": [port],
            },
        }

    http_port = {
        "name": "http",
        "appProtocol": "http",
        "port": HTTP_SERVICE_PORT,
        "targetPort": nginx.L7_PORT,
        "protocol": "TCP",
    }
    tcp_port = {"name": "tcp-web", "port": nginx.PORT, "targetPort": nginx.PORT, "protocol": "TCP"}
    return [svc(HTTP_SERVICE, http_vip, http_port), svc(TCP_SERVICE, tcp_vip, tcp_port)]


def _write(path: Path, obj: dict[str, Any]) -> None:
    """Atomically (temporary dot-file, then rename): the store's watcher never reads half an object."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".bench-")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(obj, f, sort_keys=False)
    os.replace(tmp, path)


def add(lab: Lab, server_pod: str) -> BenchServices:
    """Label `server_pod` and write the two Services into the lab's store; the caller waits for the path."""
    status = lab.status()
    store = Path(status["store"])
    pod = next((p for p in status["pods"] if p["name"] == server_pod), None)
    if pod is None or not status.get("services"):
        raise BenchError(f"lab {lab.lab_id!r}: no pod {server_pod} or no services in `lab status`")
    pod_file = store / f"pod.{pod['namespace']}.{server_pod}.yaml"
    try:
        obj = yaml.safe_load(pod_file.read_text())
        obj["metadata"].setdefault("labels", {})[ROLE_LABEL] = "server"
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise BenchError(f"cannot label {server_pod} in {pod_file}: {exc}") from exc
    _write(pod_file, obj)
    lab_vip = status["services"][0]["vip"]
    http_vip, tcp_vip = _vip(lab_vip, HTTP_VIP_OCTET), _vip(lab_vip, TCP_VIP_OCTET)
    for svc in service_objects(pod["namespace"], http_vip, tcp_vip):
        _write(store / f"service.{pod['namespace']}.{svc['metadata']['name']}.yaml", svc)
    return BenchServices(http_vip, HTTP_SERVICE_PORT, tcp_vip, nginx.PORT)
