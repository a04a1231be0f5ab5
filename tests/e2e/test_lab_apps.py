"""`meshlet lab up --apps FILE`, `lab apply -f`, `lab delete -f`: Deployments become pods of the mesh, as kubectl
would make them, and the mesh names their workload after the Deployment.

One lab of its own (it adds and removes pods): a Deployment of two replicas in an ambient namespace behind an
HTTP Service; requests to the Service reach both pods through the mesh, the metrics say `echo-v1`; scaling to
one removes a pod with its network namespace; applying the same file again changes nothing; deleting the file's
objects leaves the lab as `up` made it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlet.lab.plan import prefix_for
from tests.conftest import wait_for
from tests.e2e.conftest import Lab, lab_of, meshlet
from tests.e2e.mesh_helpers import curl, metric

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {meshlet.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-v1, namespace: shop}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: echo, version: v1}}
  template:
    metadata: {labels: {app: echo, version: v1}}
    spec:
      serviceAccountName: echo
      containers: [{name: app, image: echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def manifest(tmp_path: Path, replicas: int) -> Path:
    path = tmp_path / f"apps-{replicas}.yaml"
    path.write_text(MANIFEST.replace("REPLICAS", str(replicas)))
    return path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_of("--apps", str(manifest(tmp_path, 2))) as running:
        yield running


def status(lab: Lab) -> dict[str, object]:
    result: dict[str, object] = json.loads(meshlet("lab", "--id", lab.id, "status", "-o", "json").stdout)
    return result


def shop_pods(lab: Lab) -> list[dict[str, object]]:
    return [p for p in status(lab)["pods"] if p["namespace"] == "shop"]  # type: ignore[union-attr,index]


def netns_names() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split())


def test_deployments_become_mesh_pods_named_after_their_deployment(lab: Lab, tmp_path: Path) -> None:
    pods = shop_pods(lab)
    assert len(pods) == 2 and all(p["enrolled"] and p["app"] == "running" for p in pods), pods
    assert {p["node"] for p in pods} == {"node1", "node2"}, "the replicas are spread over the nodes"
    assert all(str(p["name"]).startswith("echo-v1-") for p in pods)
    vip = next(s["vip"] for s in status(lab)["services"] if s["namespace"] == "shop")  # type: ignore[union-attr,index]
    answered = {json.loads(curl(lab, "web-1a", f"http://{vip}/hello").stdout)["pod"] for _ in range(4)}
    assert answered == {p["name"] for p in pods}
    assert metric(lab, "node1", "istio_requests_total", reporter="source", destination_workload="echo-v1") >= 4

    prefix = prefix_for(lab.id)
    before = {n for n in netns_names() if n.startswith(prefix)}
    out = meshlet("lab", "--id", lab.id, "apply", "-f", str(manifest(tmp_path, 1))).stdout
    assert "Deployment/shop/echo-v1 configured" in out
    assert len(shop_pods(lab)) == 1
    wait_for(lambda: len(before - netns_names()) == 1, 10, "the removed pod's network namespace to go")
    again = meshlet("lab", "--id", lab.id, "apply", "-f", str(manifest(tmp_path, 1))).stdout
    assert all(line.endswith("unchanged") for line in again.strip().splitlines()), again

    gone = meshlet("lab", "--id", lab.id, "delete", "-f", str(manifest(tmp_path, 1))).stdout
    assert "Deployment/shop/echo-v1 deleted" in gone
    assert shop_pods(lab) == []
    assert {p["name"] for p in status(lab)["pods"]} == {"web-1a", "web-1b", "web-2a", "web-2b"}  # type: ignore[union-attr,index]

    # Applied again, the pods come back with the same names, IPs and identity, on fresh network namespaces: the
    # old ones vanished without a FIN, and web-1a's ztunnel must not send streams over their dead tunnels.
    meshlet("lab", "--id", lab.id, "apply", "-f", str(manifest(tmp_path, 2)))
    try:
        again_pods = shop_pods(lab)
        assert {p["ip"] for p in again_pods} == {p["ip"] for p in pods}, "the lab hands out the same IPs again"

        def answered_by_both() -> bool:
            seen = set()
            for _ in range(4):
                proc = curl(lab, "web-1a", f"http://{vip}/hello", timeout=3)
                if proc.returncode == 0:
                    seen.add(json.loads(proc.stdout)["pod"])
            return seen == {p["name"] for p in again_pods}

        wait_for(answered_by_both, 15, "both new replicas answering through the Service")
        failed = [proc.stderr for proc in (curl(lab, "web-1a", f"http://{vip}/hello", timeout=3) for _ in range(8))
                  if proc.returncode != 0]  # fmt: skip
        assert failed == [], f"{len(failed)} of 8 requests failed after the Deployment came back: {failed[:2]}"
    finally:
        meshlet("lab", "--id", lab.id, "delete", "-f", str(manifest(tmp_path, 2)))
