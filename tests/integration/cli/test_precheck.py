"""`meshlet check --pre-install` on the test API server: a healthy cluster passes; an old Kubernetes, an old
kernel or a missing permission fails with the reason; Cilium's in-pod socket load balancer and a missing Gateway
API are warnings (exit 0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli.conftest import meshlet, seed
from tests.kubeapi import KubeApiServer


def node(name: str, kernel: str = "6.1.0-18-amd64") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"nodeInfo": {"kernelVersion": kernel, "containerRuntimeVersion": "containerd://1.7.13"}},
    }


def daemonset(name: str) -> dict[str, Any]:
    labels = {"k8s-app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": "x:1"}]}},
        },
    }


HTTPROUTE_CRD = {
    "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
    "spec": {
        "group": "gateway.networking.k8s.io",
        "scope": "Namespaced",
        "names": {"plural": "httproutes", "kind": "HTTPRoute"},
        "versions": [{"name": "v1", "served": True, "storage": True}],
    },
}


@pytest.fixture
def healthy(api: KubeApiServer) -> KubeApiServer:
    for name in ("node-1", "node-2"):
        seed(api, "", "v1", "nodes", "", node(name))
    seed(api, "apps", "v1", "daemonsets", "kube-system", daemonset("kindnet"))
    seed(api, "apiextensions.k8s.io", "v1", "customresourcedefinitions", "", HTTPROUTE_CRD)
    return api


def check(kubeconfig: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = meshlet("check", "--pre-install", "--kubeconfig", str(kubeconfig), "-o", "json", *extra)
    assert result.output.startswith("{"), (result.output, result.exception)
    data = json.loads(result.output)
    assert data["ok"] == (result.exit_code == 0)
    return result.exit_code, {r["name"]: r for r in data["results"]}


def test_a_healthy_cluster_passes(healthy: KubeApiServer, kubeconfig: Path) -> None:
    code, results = check(kubeconfig)
    assert code == 0
    assert {name: r["level"] for name, r in results.items() if r["level"] != "pass"} == {}
    assert results["Kubernetes version"]["detail"] == "v1.31.0"
    assert results["node node-1"]["detail"] == "kernel 6.1.0-18-amd64, runtime containerd://1.7.13"
    assert results["CNI"]["detail"] == "kindnet"
    assert "create daemonsets.apps" in results
    table = meshlet("check", "--pre-install", "--kubeconfig", str(kubeconfig))
    assert table.exit_code == 0 and "ready to install (0 failures, 0 warnings)" in table.output


def test_an_old_kubernetes_fails(healthy: KubeApiServer, kubeconfig: Path) -> None:
    healthy.version.update(minor="27", gitVersion="v1.27.3")
    code, results = check(kubeconfig)
    assert code == 1
    assert results["Kubernetes version"]["level"] == "fail"
    assert results["Kubernetes version"]["hint"] == "meshlet supports Kubernetes 1.29 and newer"
    table = meshlet("check", "--pre-install", "--kubeconfig", str(kubeconfig))
    assert table.exit_code == 1 and "1 failures" in table.output and "v1.27.3" in table.output


def test_an_old_kernel_fails_and_a_pre_ebpf_kernel_warns_unless_ebpf_is_required(
    healthy: KubeApiServer, kubeconfig: Path
) -> None:
    seed(healthy, "", "v1", "nodes", "", node("old", "4.14.0"))
    seed(healthy, "", "v1", "nodes", "", node("mid", "5.4.0-150-generic"))
    code, results = check(kubeconfig)
    assert code == 1
    assert (results["node old"]["level"], results["node old"]["hint"]) == ("fail", "meshlet needs Linux 4.19 or newer")
    assert results["node mid"]["level"] == "warn" and "uses iptables" in results["node mid"]["hint"]
    healthy.store.delete(healthy.store.find("", "v1", "nodes"), "", "old")
    assert check(kubeconfig)[0] == 0
    code, results = check(kubeconfig, "--set", "redirect=ebpf")
    assert code == 1 and results["node mid"]["level"] == "fail"
    assert "bpf_get_netns_cookie" in results["node mid"]["hint"]


def test_cilium_with_its_socket_lb_in_pods_is_a_warning(healthy: KubeApiServer, kubeconfig: Path) -> None:
    seed(healthy, "apps", "v1", "daemonsets", "kube-system", daemonset("cilium"))
    config = {"metadata": {"name": "cilium-config"}, "data": {"kube-proxy-replacement": "true"}}
    seed(healthy, "", "v1", "configmaps", "kube-system", config)
    code, results = check(kubeconfig)
    assert code == 0
    assert results["Cilium socket LB"]["level"] == "warn"
    assert "socketLB.hostNamespaceOnly=true" in results["Cilium socket LB"]["hint"]
    assert "Cilium" in results["CNI"]["detail"]


def test_a_missing_gateway_api_warns_and_a_missing_permission_fails(api: KubeApiServer, kubeconfig: Path) -> None:
    seed(api, "", "v1", "nodes", "", node("node-1"))
    api.denied.add(("create", "rbac.authorization.k8s.io", "clusterroles"))
    code, results = check(kubeconfig)
    assert code == 1
    assert results["Gateway API"]["level"] == "warn"
    assert results["CNI"]["level"] == "warn"  # no known CNI DaemonSet
    assert results["create clusterroles.rbac.authorization.k8s.io"]["level"] == "fail"


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    result = meshlet("check", "--pre-install", env={"HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "cannot reach a Kubernetes cluster" in result.output and "--kubeconfig" in result.output
