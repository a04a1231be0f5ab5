"""`meshlet lab apply|delete` planned: names, placement, addresses, and convergence the way kubectl applies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from control.model.kube import workload_name
from meshlet.lab.apps import AppsError, AppsState, Change, load_manifests, plan_apply, plan_delete, template_hash
from meshlet.lab.plan import LabPlan, plan_lab
from meshlet.lab.state import LabState

LAB = plan_lab("t", 1, 2, 2)
MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
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
  replicas: 3
  selector: {matchLabels: {app: echo, version: v1}}
  template:
    metadata: {labels: {app: echo, version: v1}}
    spec:
      serviceAccountName: echo
      containers: [{name: app, image: echo, ports: [{name: http, containerPort: 8080}]}]
"""


def _deployment(replicas: int, version: str = "v1", env: str = "") -> dict[str, Any]:
    labels = {"app": "echo", "version": version}
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "echo", "env": [{"name": "X", "value": env}]}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"echo-{version}", "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def _applied(text: str = MANIFESTS, lab: LabPlan = LAB) -> Change:
    return plan_apply(lab, AppsState(), load_manifests(text, "apps.yaml"))


def _again(change: Change, manifests: list[dict[str, Any]], lab: LabPlan = LAB) -> Change:
    """Apply on top of `change`'s result, after a trip through JSON (the state is saved between commands)."""
    return plan_apply(lab, AppsState.from_json(json.loads(json.dumps(change.state.to_json()))), manifests)


def test_deployment_pods_are_named_labelled_and_owned_so_control_names_the_deployment() -> None:
    change = _applied()
    assert [p.pod.name for p in change.start] == [p.pod.name for p in change.state.pods] and len(change.start) == 3
    pods = [o for o in change.write if o["kind"] == "Pod"]
    assert len(pods) == 3 and len({o["metadata"]["name"] for o in pods}) == 3
    for obj in pods:
        hash_ = obj["metadata"]["labels"]["pod-template-hash"]
        assert re.fullmatch(rf"echo-v1-{hash_}-[a-z0-9]{{5}}", obj["metadata"]["name"]) and len(hash_) == 10
        assert obj["metadata"]["labels"]["version"] == "v1" and obj["spec"]["serviceAccountName"] == "echo"
        assert obj["metadata"]["ownerReferences"][0]["name"] == f"echo-v1-{hash_}"
        assert workload_name(obj, obj["metadata"]["name"]) == "echo-v1"
        assert obj["status"]["podIP"] == next(p.pod.ip for p in change.start if p.pod.name == obj["metadata"]["name"])
    assert [o["metadata"]["name"] for o in change.write if o["kind"] == "ReplicaSet"] == [f"echo-v1-{hash_}"]


def test_pods_go_round_robin_and_get_free_addresses_of_their_node() -> None:
    pods = [p.pod for p in _applied().start]
    assert [p.node for p in pods] == ["node1", "node2", "node1"]
    static = {p.ip for p in LAB.pods}
    assert not static & {p.ip for p in pods} and len({p.ip for p in pods}) == 3
    for pod in pods:
        node = LAB.node(pod.node)
        assert pod.ip.rsplit(".", 1)[0] == node.pod_cidr.rsplit(".", 1)[0] and pod.ip != node.gateway
        assert pod.netns == f"ml-t-shop-{pod.name}" and pod.cgroup == f"ml-t-lab/{pod.node}/pods/shop.{pod.name}"
    assert [p.node_link for p in pods if p.node == "node1"] == ["vp4", "vp5"]  # .2 and .3 are up's pods


def test_one_replica_deployments_are_spread_over_the_nodes() -> None:
    first = plan_apply(LAB, AppsState(), [*load_manifests(MANIFESTS, "a")[1:2], _deployment(1, "v1")])
    second = _again(first, [_deployment(1, "v2"), _deployment(1, "v3")])
    assert [p.pod.node for p in [*first.start, *second.start]] == ["node1", "node2", "node1"]


def test_template_hash_ignores_key_order_and_changes_with_the_template() -> None:
    a = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {}}
    b = {"spec": {}, "metadata": {"labels": {"b": "2", "a": "1"}}}
    assert template_hash(a) == template_hash(b) != template_hash({**a, "spec": {"x": 1}})


def test_applying_twice_changes_nothing() -> None:
    first = _applied()
    second = _again(first, load_manifests(MANIFESTS, "apps.yaml"))
    assert (second.write, second.remove, second.start, second.stop) == ([], [], [], [])
    assert all(line.endswith(" unchanged") for line in second.results) and len(second.results) == 4
    assert second.state.to_json() == json.loads(json.dumps(first.state.to_json()))


def test_replicas_scale_up_and_down_keeping_the_oldest_pods() -> None:
    first = plan_apply(LAB, AppsState(), [*load_manifests(MANIFESTS, "a")[:3], _deployment(3)])
    down = _again(first, [_deployment(1)])
    assert down.stop == first.start[1:] and down.start == []
    assert {o["metadata"]["name"] for o in down.remove} == {p.pod.name for p in first.start[1:]}
    assert "Deployment/shop/echo-v1 configured" in down.results
    up = _again(down, [_deployment(2)])
    assert len(up.start) == 1 and up.start[0].pod.node == "node2" and up.stop == []


def test_a_changed_template_replaces_the_pods_and_their_replica_set() -> None:
    first = plan_apply(LAB, AppsState(), [*load_manifests(MANIFESTS, "a")[:3], _deployment(2)])
    changed = _again(first, [_deployment(2, env="new")])
    assert changed.stop == first.start and len(changed.start) == 2
    old_rs = {o["metadata"]["name"] for o in first.write if o["kind"] == "ReplicaSet"}
    assert old_rs <= {o["metadata"]["name"] for o in changed.remove}
    assert {p.template_hash for p in changed.state.pods} == {changed.start[0].template_hash}


def test_services_get_the_lowest_free_cluster_ip_and_keep_it() -> None:
    first = _applied()
    service = next(o for o in first.write if o["kind"] == "Service")
    taken = {s.vip for s in LAB.services}
    assert service["spec"]["clusterIP"] == "10.96.1.12" and "10.96.1.12" not in taken
    assert service["spec"]["clusterIPs"] == ["10.96.1.12"] and service["spec"]["ports"][0]["protocol"] == "TCP"
    other = {**service, "metadata": {"name": "other", "namespace": "shop"}, "spec": {"ports": [{"port": 80}]}}
    assert next(o for o in _again(first, [other]).write)["spec"]["clusterIP"] == "10.96.1.13"


@pytest.mark.parametrize(
    ("ip", "error"),
    [("10.0.0.1", "not a free address"), ("10.96.1.10", "not a free address"), ("10.96.1.50", "immutable")],
)
def test_a_cluster_ip_must_be_free_in_range_and_never_changes(ip: str, error: str) -> None:
    first = _applied()
    service = next(o for o in load_manifests(MANIFESTS, "a") if o["kind"] == "Service")
    service["spec"]["clusterIP"] = ip
    if error == "immutable":
        with pytest.raises(AppsError, match=error):
            _again(first, [service])
    else:
        with pytest.raises(AppsError, match=error):
            plan_apply(LAB, AppsState(), [*load_manifests(MANIFESTS, "a")[1:2], service])


def test_bad_manifests_are_refused_naming_the_object_and_field() -> None:
    with pytest.raises(AppsError, match="apps.yaml, document 2: Deployment without metadata.name"):
        load_manifests(
            "kind: Namespace\napiVersion: v1\nmetadata: {name: a}\n---\nkind: Deployment\napiVersion: x\n", "apps.yaml"
        )
    with pytest.raises(AppsError, match="namespace 'nowhere' does not exist"):
        plan_apply(LAB, AppsState(), [{**_deployment(1), "metadata": {"name": "d", "namespace": "nowhere"}}])
    bad = _deployment(1)
    bad["spec"]["selector"]["matchLabels"] = {"app": "other"}
    with pytest.raises(AppsError, match="Deployment/shop/echo-v1: spec.selector.matchLabels"):
        plan_apply(LAB, AppsState(), [*load_manifests(MANIFESTS, "a")[1:2], bad])
    with pytest.raises(AppsError, match="Pod/default/p: the lab runs pods through Deployments only"):
        plan_apply(LAB, AppsState(), [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}])
    with pytest.raises(AppsError, match=r"spec.replicas 99 must be a number in 0..50"):
        plan_apply(LAB, AppsState(), [*load_manifests(MANIFESTS, "a")[1:2], _deployment(99)])


def test_lists_are_flattened_and_other_kinds_are_stored_in_the_default_namespace() -> None:
    route = "{apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: r}}"
    text = f"kind: List\napiVersion: v1\nitems:\n- {route}\n"
    change = plan_apply(LAB, AppsState(), load_manifests(text, "a"))
    assert change.write == [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "default"},
        }
    ]


def test_deleting_a_deployment_removes_its_pods_and_replica_sets_and_reports_what_was_not_there() -> None:
    first = _applied()
    gone = plan_delete(LAB, first.state, [_deployment(3), {**_deployment(1, "v9")}])
    assert gone.stop == first.start and gone.state.pods == []
    assert {o["kind"] for o in gone.remove} == {"Deployment", "ReplicaSet", "Pod"} and len(gone.remove) == 5
    assert gone.results == ["Deployment/shop/echo-v1 deleted", "Deployment/shop/echo-v9 not found"]
    assert {o["kind"] for o in gone.state.objects.values()} == {"Namespace", "Service", "ServiceAccount"}


def test_deleting_a_namespace_takes_everything_applied_in_it() -> None:
    first = _applied()
    gone = plan_delete(LAB, first.state, load_manifests(MANIFESTS, "a")[1:2])
    assert gone.state.objects == {} and gone.state.pods == [] and len(gone.stop) == 3
    assert len(gone.remove) == len(first.state.objects)
    whole_file = plan_delete(LAB, first.state, load_manifests(MANIFESTS, "a"))
    assert all(line.endswith(" deleted") for line in whole_file.results) and len(whole_file.results) == 4


def test_the_lab_state_keeps_what_was_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHLET_LAB_ROOT", str(tmp_path))
    (tmp_path / "t").mkdir()
    state = LabState(plan=LAB, directory=str(tmp_path / "t"), apps=_applied().state.to_json())
    state.save()
    loaded = LabState.load("t")
    assert loaded is not None and AppsState.from_json(loaded.apps).pods == _applied().state.pods
