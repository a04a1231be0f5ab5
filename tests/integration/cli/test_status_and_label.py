"""`meshlet status --kubeconfig` aggregates the install (Deployment, DaemonSet, each node's pod) and control's
/debug/status fetched through the API server's service proxy; `meshlet label` on a cluster is a merge patch of
the labels that lands on the server (set, overwrite, `key-` removes), and without a kubeconfig it stays local."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from tests.integration.cli.conftest import meshlet, seed
from tests.json_stub import json_server
from tests.kubeapi import KubeApiServer

NS = "meshlet-system"
# The shape of control's /debug/status (control/server.py): what `meshlet status` reads from it.
CONTROL_STATUS = {
    "epoch": 1,
    "version": 7,
    "synced": True,
    "source": "kubernetes",
    "proxies": [{"node": "node-1", "ackedVersion": 7}],
    "errors": [{"origin": "kubernetes", "object": "AuthorizationPolicy default/bad", "reason": "unknown action"}],
}


@pytest.fixture
def control_port() -> Iterator[int]:
    with json_server(lambda path: (200, CONTROL_STATUS) if path == "/debug/status" else (404, {})) as port:
        yield port


def node_pod(name: str, node: str, ready: bool, restarts: int) -> dict[str, Any]:
    statuses = [
        {"name": c, "ready": ready, "restartCount": restarts, "image": "meshlet:0.1.0", "imageID": "", "state": {}}
        for c in ("agent", "ztunnel")
    ]
    return {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "meshlet-node"}},
        "spec": {"nodeName": node, "containers": [{"name": "agent"}, {"name": "ztunnel"}]},
        "status": {"phase": "Running" if ready else "Pending", "containerStatuses": statuses},
    }


@pytest.fixture
def installed(api: KubeApiServer, kubeconfig: Path, control_port: int) -> KubeApiServer:
    result = meshlet("install", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 0, result.output
    # What the controllers and the kubelet would write on a real cluster.
    apps = api.store.find("apps", "v1", "deployments")
    api.store.update(apps, NS, "meshlet-control", lambda d: {**d, "status": {"readyReplicas": 1}}, "status")
    daemonsets = api.store.find("apps", "v1", "daemonsets")
    counts = {"desiredNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}
    api.store.update(daemonsets, NS, "meshlet-node", lambda d: {**d, "status": counts}, "status")
    seed(api, "", "v1", "pods", NS, node_pod("meshlet-node-aaaaa", "node-1", True, 0))
    seed(api, "", "v1", "pods", NS, node_pod("meshlet-node-bbbbb", "node-2", False, 3))
    endpoints = {
        "metadata": {"name": "meshlet-control-x1", "labels": {"kubernetes.io/service-name": "meshlet-control"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-monitoring", "port": control_port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }
    seed(api, "discovery.k8s.io", "v1", "endpointslices", NS, endpoints)
    return api


def test_status_aggregates_the_install_and_controls_own_status(installed: KubeApiServer, kubeconfig: Path) -> None:
    result = meshlet("status", "--kubeconfig", str(kubeconfig), "-o", "json")
    assert result.exit_code == 1, result.output  # node-2 is not ready and control rejected an object
    report = json.loads(result.output)
    assert report["control"] == {"found": True, "desired": 1, "ready": 1}
    assert report["daemonSet"] == {"found": True, "desired": 2, "ready": 1, "updated": 2, "available": 1}
    assert [(n["node"], n["phase"], n["ready"], n["restarts"], n["connectedToControl"]) for n in report["nodes"]] == [
        ("node-1", "Running", "2/2", 0, True),
        ("node-2", "Pending", "0/2", 6, False),  # restarts of both containers
    ]
    assert report["controlStatus"]["proxies"] == [{"node": "node-1", "ackedVersion": 7}]
    assert report["controlStatus"]["configVersion"] == 7
    assert any("control rejected AuthorizationPolicy default/bad: unknown action" in p for p in report["problems"])
    assert any("meshlet-node-bbbbb is Pending" in p for p in report["problems"])
    # It went through the service proxy, not to the address directly.
    proxied = [unquote(path) for _, path in installed.requests if "/proxy/" in path]
    assert proxied == [f"/api/v1/namespaces/{NS}/services/meshlet-control:15014/proxy/debug/status"]
    table = meshlet("status", "--kubeconfig", str(kubeconfig))
    assert "desired 2, ready 1, updated 2, available 1" in table.output
    assert "1 proxies connected, config version 7, 1 rejected objects" in table.output


def test_status_says_when_control_cannot_be_reached(installed: KubeApiServer, kubeconfig: Path) -> None:
    slices = installed.store.find("discovery.k8s.io", "v1", "endpointslices")
    installed.store.delete(slices, NS, "meshlet-control-x1")
    report = json.loads(meshlet("status", "--kubeconfig", str(kubeconfig), "-o", "json").output)
    assert report["controlStatus"] == {"reachable": False}
    assert any("HTTP 503" in p for p in report["problems"])


def test_status_without_an_install_says_so(api: KubeApiServer, kubeconfig: Path) -> None:
    result = meshlet("status", "--cluster", "--kubeconfig", str(kubeconfig), "-o", "json")
    assert result.exit_code == 1
    assert "is meshlet installed" in json.loads(result.output)["problems"][0]


def labels(api: KubeApiServer, plural: str, namespace: str, name: str) -> dict[str, str]:
    got = api.store.get(api.store.find("", "v1", plural), namespace, name)["metadata"].get("labels") or {}
    return dict(got)


def test_label_a_namespace_and_a_pod_on_the_cluster(api: KubeApiServer, kubeconfig: Path) -> None:
    seed(api, "", "v1", "namespaces", "", {"metadata": {"name": "shop", "labels": {"team": "a"}}})
    seed(api, "", "v1", "pods", "shop", {"metadata": {"name": "web-0"}, "spec": {"containers": [{"name": "c"}]}})
    key = "meshlet.io/dataplane-mode"
    result = meshlet("label", "--kubeconfig", str(kubeconfig), "namespace", "shop", f"{key}=ambient")
    assert result.exit_code == 0, result.output
    assert labels(api, "namespaces", "", "shop") == {"team": "a", key: "ambient"}
    # Through KUBECONFIG, as kubectl: overwrite one, remove another.
    env = {"KUBECONFIG": str(kubeconfig)}
    assert meshlet("label", "namespace", "shop", f"{key}=none", "team-", env=env).exit_code == 0
    assert labels(api, "namespaces", "", "shop") == {key: "none"}
    assert ("PATCH", "/api/v1/namespaces/shop") in api.requests
    result = meshlet("label", "--kubeconfig", str(kubeconfig), "pod", "web-0", "-n", "shop", f"{key}=none")
    assert result.exit_code == 0, result.output
    assert labels(api, "pods", "shop", "web-0") == {key: "none"}
    missing = meshlet("label", "--kubeconfig", str(kubeconfig), "pod", "nope", "-n", "shop", "a=b")
    assert missing.exit_code == 1 and "no pod 'nope' in namespace shop on the cluster" in missing.output


def test_label_without_a_kubeconfig_stays_local(tmp_path: Path) -> None:
    result = meshlet("label", "pod", "web-0", "a=b", "--lab", "nolab", env={"HOME": str(tmp_path)})
    assert result.exit_code == 1 and "no lab 'nolab' is up" in result.output
    store = tmp_path / "store"
    store.mkdir()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "shop"}}
    (store / "pod.yaml").write_text(yaml.safe_dump(pod))
    result = meshlet("label", "--store", str(store), "pod", "web-0", "-n", "shop", "meshlet.io/dataplane-mode=none",
                     env={"HOME": str(tmp_path)})  # fmt: skip
    assert result.exit_code == 0, result.output
    labelled = yaml.safe_load((store / "pod.yaml").read_text())["metadata"]["labels"]
    assert labelled == {"meshlet.io/dataplane-mode": "none"}
    other = meshlet("label", "--store", str(store), "pod", "web-0", "a=b", env={"HOME": str(tmp_path)})
    assert other.exit_code == 1 and "no Pod 'web-0' in namespace 'default'" in other.output
    (store / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
    result = meshlet("label", "--store", str(store), "namespace", "shop", "a=b", env={"HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "a: b" in (store / "ns.yaml").read_text()
