"""The store keeps the last good version of every object and versions only what proxies would see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from control.model.fields import ObjectKey
from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.store import CONVERTERS, ConfigStore


def ns(name: str, ambient: bool = False) -> dict[str, Any]:
    labels = {"meshlet.io/dataplane-mode": "ambient"} if ambient else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(name: str, ip: str, namespace: str = "mesh", node: str = "node1", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web", **labels}},
        "spec": {"nodeName": node, "serviceAccountName": "web"},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.fixture
def store() -> ConfigStore:
    s = ConfigStore(MeshSettings(trust_domain="td.test"))
    s.apply([SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain"), pod("p1", "10.0.0.1")))])
    return s


def workloads(store: ConfigStore) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in store.state["workloads"].values()}


def test_workload_gets_identity_and_enrollment(store: ConfigStore) -> None:
    w = workloads(store)["p1"]
    assert w["identity"] == "spiffe://td.test/ns/mesh/sa/web"
    assert w["enrolled"] is True and w["ips"] == ["10.0.0.1"] and w["node"] == "node1"
    assert store.version == 1 and store.synced


def test_namespace_label_change_reenrolls_and_bumps_version(store: ConfigStore) -> None:
    store.apply([SourceBatch("a.yaml", (ns("mesh"), ns("plain"), pod("p1", "10.0.0.1")))])
    assert workloads(store)["p1"]["enrolled"] is False
    assert store.version == 2


def test_the_revision_counts_object_changes_a_version_does_not_see_and_only_those(store: ConfigStore) -> None:
    seen: list[int] = []
    store.subscribe(lambda: seen.append(store.revision), objects=True)
    revision, version = store.revision, store.version
    store.apply([SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain"), pod("p1", "10.0.0.1")))])
    assert (store.revision, seen) == (revision, [])  # the same objects again (a watch's resend): no change
    store.apply([SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain", ambient=False), ns("extra"),
                                        pod("p1", "10.0.0.1")))])  # fmt: skip
    assert store.version == version and store.revision == revision + 1 and seen == [revision + 1]


def test_pod_opt_out_label_and_host_network() -> None:
    s = ConfigStore(MeshSettings())
    hn = pod("h", "10.1.1.1")
    hn["spec"]["hostNetwork"] = True
    s.apply(
        [
            SourceBatch(
                "a", (ns("mesh", ambient=True), pod("o", "10.0.0.2", **{"meshlet.io/dataplane-mode": "none"}), hn)
            )
        ]
    )
    assert not workloads(s)["o"]["enrolled"] and not workloads(s)["h"]["enrolled"]


def test_configurable_label_key() -> None:
    s = ConfigStore(MeshSettings(dataplane_label="istio.io/dataplane-mode"))
    n = {"kind": "Namespace", "metadata": {"name": "mesh", "labels": {"istio.io/dataplane-mode": "ambient"}}}
    s.apply([SourceBatch("a", (n, pod("p", "10.0.0.3")))])
    assert workloads(s)["p"]["enrolled"]


def test_invalid_update_keeps_last_good_version_and_names_file_object_reason(store: ConfigStore) -> None:
    bad = pod("p1", "not-an-ip")
    store.apply([SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain"), bad))])
    assert workloads(store)["p1"]["ips"] == ["10.0.0.1"]
    [err] = store.all_errors()
    assert (err.origin, err.object) == ("a.yaml", "Pod mesh/p1")
    assert "status.podIP" in err.reason and "not an IP address" in err.reason
    assert store.version == 1  # nothing proxies see has changed
    store.apply([SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain"), pod("p1", "10.0.0.9")))])
    assert workloads(store)["p1"]["ips"] == ["10.0.0.9"] and not store.all_errors()


def test_duplicate_pod_ip_is_rejected_the_first_holder_stays(store: ConfigStore) -> None:
    store.apply([SourceBatch("b.yaml", (pod("p2", "10.0.0.1"),))])
    assert "p2" not in workloads(store)
    [err] = store.all_errors()
    assert err.object == "Pod mesh/p2" and "IP 10.0.0.1 is already used by Pod mesh/p1" in err.reason


def test_file_level_error_keeps_objects_and_is_cleared_when_fixed(store: ConfigStore) -> None:
    store.apply([SourceBatch("a.yaml", errors=("unreadable YAML: bad indent",))])
    assert "p1" in workloads(store)
    assert [str(e) for e in store.all_errors()] == ["a.yaml: unreadable YAML: bad indent"]
    store.apply([SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain"), pod("p1", "10.0.0.1")))])
    assert not store.all_errors()


def test_delete_from_a_file_that_no_longer_owns_the_object_is_ignored(store: ConfigStore) -> None:
    store.apply(
        [
            SourceBatch("b.yaml", (pod("p1", "10.0.0.1"),)),
            SourceBatch("a.yaml", deletes=(ObjectKey("Pod", "mesh", "p1"),)),
        ]
    )
    assert "p1" in workloads(store)


def test_unused_kinds_are_ignored_not_errors(store: ConfigStore) -> None:
    store.apply([SourceBatch("c.yaml", ({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "mesh"}},))])
    assert not store.all_errors() and store.version == 1


def test_listeners_hear_new_versions_only(store: ConfigStore) -> None:
    heard: list[int] = []
    store.subscribe(lambda: heard.append(store.version))
    store.apply([SourceBatch("d.yaml", ({"kind": "ServiceAccount", "metadata": {"name": "x", "namespace": "mesh"}},))])
    store.apply([SourceBatch("e.yaml", (pod("p3", "10.0.0.3"),))])
    assert heard == [2]


def test_service_endpoints_resolve_named_ports(store: ConfigStore) -> None:
    p = pod("p4", "10.0.0.4")
    p["spec"]["containers"] = [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]
    svc = {
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "mesh"},
        "spec": {"clusterIP": "10.96.0.1", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    store.apply([SourceBatch("f.yaml", (p, svc))])
    item = store.state["services"]["mesh/web"]
    assert item["hostname"] == "web.mesh.svc.cluster.local"
    assert [(e["ip"], e["ports"]) for e in item["endpoints"]] == [("10.0.0.1", {}), ("10.0.0.4", {"80": 8080})]


def test_duplicate_comes_into_force_when_the_first_holder_goes(store: ConfigStore) -> None:
    store.apply([SourceBatch("b.yaml", (pod("p2", "10.0.0.1"),))])
    assert "p2" not in workloads(store)
    store.apply(
        [SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain")), deletes=(ObjectKey("Pod", "mesh", "p1"),))]
    )
    assert "p2" in workloads(store) and "p1" not in workloads(store)
    assert not store.all_errors()


def test_finished_pods_give_their_ip_back(store: ConfigStore) -> None:
    done = pod("job", "10.0.0.7")
    done["status"]["phase"] = "Succeeded"
    store.apply([SourceBatch("c.yaml", (done,)), SourceBatch("d.yaml", (pod("new", "10.0.0.7"),))])
    assert "new" in workloads(store) and not store.all_errors()


def test_a_converter_failing_on_odd_input_is_that_objects_error(
    store: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = CONVERTERS["Pod"]

    def fragile(raw: Mapping[str, Any]) -> Any:
        if raw["metadata"]["name"] == "p1":
            raise RecursionError("maximum recursion depth exceeded")
        return real(raw)

    monkeypatch.setitem(CONVERTERS, "Pod", fragile)
    store.apply([SourceBatch("a.yaml", (ns("mesh", ambient=True), ns("plain"), pod("p1", "10.0.0.9"))),
                 SourceBatch("b.yaml", (pod("p2", "10.0.0.2"),))])  # fmt: skip
    assert workloads(store)["p1"]["ips"] == ["10.0.0.1"] and "p2" in workloads(store)  # last good; the rest applied
    [err] = store.all_errors()
    assert (err.origin, err.object) == ("a.yaml", "Pod mesh/p1")
    assert err.reason == "unreadable: RecursionError: maximum recursion depth exceeded"


def test_istio_traffic_kinds_are_reported_as_not_applied_with_what_to_use(store: ConfigStore) -> None:
    objects = (
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "mesh"},
        },
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": {"name": "dr", "namespace": "mesh"},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "mesh"}},
    )
    store.apply([SourceBatch("istio.yaml", objects)])
    found = {e.object: e.reason for e in store.all_errors()}
    assert set(found) == {"VirtualService mesh/vs", "DestinationRule mesh/dr"}  # a ConfigMap is simply not ours
    assert "HTTPRoute" in found["VirtualService mesh/vs"] and "TrafficPolicy" in found["DestinationRule mesh/dr"]
    assert "p1" in workloads(store)  # nothing else is affected
    store.apply([SourceBatch("istio.yaml", ())])
    assert not store.all_errors()


def _service(name: str, namespace: str, vip: str) -> dict[str, Any]:
    spec = {"selector": {"app": "web"}, "clusterIP": vip, "ports": [{"port": 80, "targetPort": 8080}]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_a_change_rebuilds_only_what_depends_on_it_and_the_state_equals_a_full_build() -> None:
    from control.model.mesh import build_state

    s = ConfigStore(MeshSettings(trust_domain="td.test"))
    objects = (ns("mesh", ambient=True), ns("other", ambient=True), pod("p1", "10.0.0.1"), pod("p2", "10.0.0.2"),
               pod("q1", "10.0.1.1", namespace="other"), _service("web", "mesh", "10.96.0.1"),
               _service("web", "other", "10.96.0.2"))  # fmt: skip
    s.apply([SourceBatch("a.yaml", objects)])
    before = {c: dict(items) for c, items in s.state.items()}
    s.apply([SourceBatch("b.yaml", (pod("p2", "10.0.0.2", version="v2"),))])
    after = s.state
    by_name = {w["name"]: k for k, w in after["workloads"].items()}
    assert after["workloads"][by_name["p1"]] is before["workloads"][by_name["p1"]]  # untouched: the same item
    assert after["workloads"][by_name["p2"]]["labels"]["version"] == "v2"
    assert after["services"]["other/web"] is before["services"]["other/web"]  # another namespace's Service
    assert after["services"]["mesh/web"] is not before["services"]["mesh/web"]  # its endpoints' pods changed
    # A namespace relabelled reaches its pods' items (enrolled), though the pods did not change.
    s.apply([SourceBatch("a2.yaml", (ns("other"),))])
    q1 = next(w for w in s.state["workloads"].values() if w["name"] == "q1")
    assert q1["enrolled"] is False
    assert s.state == build_state(s.objects.values(), s.settings)  # what a build from scratch makes
