"""PATCH in its four content types, server-side apply, and the /status subresource's separation."""

from __future__ import annotations

from tests.integration.kubeapi.conftest import MERGE, pod, raw
from tests.kubeapi import KubeApiServer

STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
POD = "/api/v1/namespaces/default/pods/a"


def test_merge_patch_merges_maps_and_null_deletes(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a", labels={"app": "web", "tier": "front"}))
    patched = v1.patch_namespaced_pod(
        "a",
        "default",
        {"metadata": {"labels": {"tier": None, "v": "2"}, "annotations": {"x": "y"}}},
        _content_type=MERGE,
    )
    assert patched.metadata.labels == {"app": "web", "v": "2"} and patched.metadata.annotations == {"x": "y"}
    status, body = raw(api, "PATCH", POD, {"metadata": {"labels": {"s": "1"}}}, STRATEGIC)
    assert status == 200 and body["metadata"]["labels"] == {"app": "web", "v": "2", "s": "1"}


def test_the_clients_patch_types_dict_strategic_list_json_patch(api: KubeApiServer) -> None:
    """kubernetes 37's CoreV1Api sends a dict as strategic merge and a list as JSON patch."""
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a"))
    v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"y": "1"}}})
    assert api.store.get(api.store.types[("", "v1", "pods")], "default", "a")["metadata"]["labels"] == {"y": "1"}
    status, body = raw(api, "PATCH", POD, {"metadata": {}}, JSON_PATCH)  # a JSON patch must be a list
    assert (status, body["reason"]) == (400, "BadRequest")
    patched = v1.patch_namespaced_pod("a", "default", [{"op": "add", "path": "/metadata/labels/x", "value": "1"}])
    assert patched.metadata.labels == {"y": "1", "x": "1"}
    status, body = raw(api, "PATCH", POD, [{"op": "test", "path": "/metadata/labels/x", "value": "2"}], JSON_PATCH)
    assert (status, body["reason"]) == (422, "Invalid")
    status, body = raw(api, "PATCH", POD, b"{}", "application/xml")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_a_patch_with_a_stale_resource_version_conflicts(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    first = v1.create_namespaced_pod("default", pod("a"))
    v1.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}}, _content_type=MERGE)
    patch = {"metadata": {"resourceVersion": first.metadata.resource_version, "labels": {"y": "1"}}}
    status, body = raw(api, "PATCH", POD, patch, MERGE)
    assert (status, body["reason"]) == (409, "Conflict")


def test_server_side_apply_creates_then_applies_and_needs_a_field_manager(api: KubeApiServer) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: default\ndata:\n  a: '1'\n"
    path = "/api/v1/namespaces/default/configmaps/cfg"
    status, body = raw(api, "PATCH", path, manifest.encode(), APPLY)
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = raw(api, "PATCH", path + "?fieldManager=meshlet", manifest.encode(), APPLY)
    assert status == 201 and body["data"] == {"a": "1"}
    assert [m["manager"] for m in body["metadata"]["managedFields"]] == ["meshlet"]
    again = manifest.replace("a: '1'", "b: '2'")
    status, body = raw(api, "PATCH", path + "?fieldManager=meshlet&force=true", again.encode(), APPLY)
    # the field this manager applied before and no longer applies is removed (Server-Side Apply, field management)
    assert status == 200 and body["data"] == {"b": "2"}
    # re-applying the same thing is a no-op: the resourceVersion stays
    status, same = raw(api, "PATCH", path + "?fieldManager=meshlet", again.encode(), APPLY)
    assert status == 200 and same["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]


def test_status_is_written_only_through_its_subresource(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    created = v1.create_namespaced_pod("default", dict(pod("a"), status={"phase": "Running"}))
    assert created.status.phase == "Pending"  # a create cannot set the status
    running = v1.patch_namespaced_pod_status(
        "a",
        "default",
        {"status": {"phase": "Running", "podIP": "10.0.0.5"}, "spec": {"nodeName": "other"}},
        _content_type=MERGE,
    )
    assert running.status.pod_ip == "10.0.0.5" and running.spec.node_name == "node-1"
    assert running.metadata.generation == created.metadata.generation  # status changes leave the generation
    relabeled = v1.patch_namespaced_pod(
        "a", "default", {"metadata": {"labels": {"x": "1"}}, "status": {"phase": "Failed"}}, _content_type=MERGE
    )
    assert relabeled.status.phase == "Running" and relabeled.status.pod_ip == "10.0.0.5"
    body = api.api_client().sanitize_for_serialization(relabeled)
    body["status"] = {"phase": "Succeeded"}
    body["spec"]["nodeName"] = "ignored"
    status, stored = raw(api, "PUT", POD + "/status", body)
    assert status == 200 and stored["status"] == {"phase": "Succeeded"} and stored["spec"]["nodeName"] == "node-1"
    assert raw(api, "GET", POD + "/status")[1]["status"]["phase"] == "Succeeded"
    assert raw(api, "GET", "/api/v1/namespaces/default/serviceaccounts/x/status")[0] == 404


def test_generation_counts_spec_changes_only(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    svc = v1.create_namespaced_service("default", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
    assert svc.metadata.generation == 1
    labeled = v1.patch_namespaced_service("s", "default", {"metadata": {"labels": {"a": "b"}}}, _content_type=MERGE)
    assert labeled.metadata.generation == 1
    changed = v1.patch_namespaced_service("s", "default", {"spec": {"ports": [{"port": 81}]}}, _content_type=MERGE)
    assert changed.metadata.generation == 2


def test_the_clients_dict_patch_of_pod_conditions_merges_by_type(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a"))
    ready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    v1.patch_namespaced_pod_status("a", "default", ready)
    scheduled = {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    both = v1.patch_namespaced_pod_status("a", "default", scheduled)
    assert sorted(c.type for c in both.status.conditions) == ["PodScheduled", "Ready"]
    status, body = raw(api, "PATCH", POD + "/status", scheduled, MERGE)  # a merge patch replaces the list
    assert status == 200 and [c["type"] for c in body["status"]["conditions"]] == ["PodScheduled"]
