"""Which pods of a node the agent handles, and which of them are enrolled."""

from __future__ import annotations

from typing import Any

from agent.enrolling import node_pods
from control.model.kube import Namespace, Pod
from control.model.mesh import MeshSettings


def ns(name: str, **labels: str) -> Namespace:
    return Namespace.from_k8s({"kind": "Namespace", "metadata": {"name": name, "labels": labels}})


def pod(name: str, node: str = "n1", namespace: str = "mesh", ip: str = "10.0.0.1", **extra: Any) -> Pod:
    labels = extra.pop("labels", {})
    return Pod.from_k8s(
        {
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, **extra},
            "status": {"phase": extra.pop("phase", "Running"), "podIP": ip},
        }
    )


AMBIENT = {"meshlet.io/dataplane-mode": "ambient"}


def test_only_this_nodes_running_pods_with_an_ip() -> None:
    objs = [ns("mesh", **AMBIENT), pod("a"), pod("b", node="n2"), pod("c", ip=""), pod("d", hostNetwork=True)]
    assert [t.name for t in node_pods(objs, "n1", MeshSettings()).values()] == ["a"]


def test_enrollment_follows_namespace_label_and_pod_opt_out() -> None:
    objs = [
        ns("mesh", **AMBIENT),
        ns("plain"),
        pod("a"),
        pod("b", ip="10.0.0.2", labels={"meshlet.io/dataplane-mode": "none"}),
        pod("c", namespace="plain", ip="10.0.0.3"),
    ]
    enrolled = {t.name: t.enrolled for t in node_pods(objs, "n1", MeshSettings()).values()}
    assert enrolled == {"a": True, "b": False, "c": False}


def test_istio_label_key_when_configured() -> None:
    objs = [ns("mesh", **{"istio.io/dataplane-mode": "ambient"}), pod("a")]
    assert not next(iter(node_pods(objs, "n1", MeshSettings()).values())).enrolled
    settings = MeshSettings(dataplane_label="istio.io/dataplane-mode")
    assert next(iter(node_pods(objs, "n1", settings).values())).enrolled
