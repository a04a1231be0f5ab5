"""A pod's workload name, as Istio derives it from its controller, and sent to ztunnel as `workloadName`."""

from __future__ import annotations

from typing import Any

import pytest

from control.model.kube import Namespace, Pod
from control.model.mesh import MeshSettings, workload_item


def pod(name: str, owners: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None) -> Pod:
    metadata: dict[str, Any] = {"name": name, "namespace": "shop", "uid": f"uid-{name}", "labels": labels or {}}
    if owners is not None:
        metadata["ownerReferences"] = owners
    return Pod.from_k8s({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"nodeName": "n1"}})


def owner(kind: str, name: str, controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "x", "controller": controller}


@pytest.mark.parametrize(
    ("owners", "labels", "expected"),
    [
        # A Deployment's pods belong to a ReplicaSet named <deployment>-<pod-template-hash>.
        ([owner("ReplicaSet", "reviews-v1-7d9f8c6b5")], {"pod-template-hash": "7d9f8c6b5"}, "reviews-v1"),
        # A ReplicaSet of its own (no template hash suffix) is the workload.
        ([owner("ReplicaSet", "standalone")], {"pod-template-hash": "abc12"}, "standalone"),
        ([owner("StatefulSet", "db")], {}, "db"),
        ([owner("DaemonSet", "logger")], {}, "logger"),
        ([owner("Job", "migrate")], {}, "migrate"),
        # A CronJob's Job is named <cronjob>-<scheduled minute>: the CronJob is the workload.
        ([owner("Job", "nightly-report-28901234")], {}, "nightly-report"),
        # An OpenShift DeploymentConfig's pods: its name is in their `deploymentconfig` label.
        ([owner("ReplicationController", "frontend-3")], {"deploymentconfig": "frontend"}, "frontend"),
        # Only the controller counts; a pod without one is its own workload.
        ([owner("ConfigMap", "not-a-controller", controller=False)], {}, "lonely-pod"),
        (None, {}, "lonely-pod"),
    ],
)
def test_workload_name_follows_istios_rules(
    owners: list[dict[str, Any]] | None, labels: dict[str, str], expected: str
) -> None:
    name = "lonely-pod" if expected == "lonely-pod" else "some-pod-x1"
    assert pod(name, owners, labels).workload_name == expected


def test_the_workload_item_carries_it() -> None:
    deployed = pod("web-7d9f8c6b5-abcde", [owner("ReplicaSet", "web-7d9f8c6b5")], {"pod-template-hash": "7d9f8c6b5"})
    item = workload_item(deployed, Namespace("shop", ()), MeshSettings())
    assert (item["name"], item["workloadName"]) == ("web-7d9f8c6b5-abcde", "web")
    bare = workload_item(pod("debug"), Namespace("shop", ()), MeshSettings())
    assert bare["workloadName"] == "debug"
