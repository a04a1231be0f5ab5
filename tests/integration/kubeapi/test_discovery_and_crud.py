"""Discovery, get/list/create/replace/delete and the Status errors, pinned to kube-apiserver's answers."""

from __future__ import annotations

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.kubeapi.conftest import MERGE, pod, raw
from tests.kubeapi import KubeApiServer


def test_discovery_documents_have_the_shapes_clients_read(api: KubeApiServer) -> None:
    status, versions = raw(api, "GET", "/api")
    assert status == 200 and versions["kind"] == "APIVersions" and versions["versions"] == ["v1"]
    _, core = raw(api, "GET", "/api/v1")
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    names = {r["name"]: r for r in core["resources"]}
    assert {"namespaces", "pods", "pods/status", "services", "serviceaccounts", "events", "nodes"} <= set(names)
    assert names["pods"]["namespaced"] and not names["nodes"]["namespaced"] and "watch" in names["pods"]["verbs"]
    _, groups = raw(api, "GET", "/apis")
    by_name = {g["name"]: g for g in groups["groups"]}
    assert by_name["discovery.k8s.io"]["preferredVersion"] == {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}
    assert "authentication.k8s.io" in by_name
    _, slices = raw(api, "GET", "/apis/discovery.k8s.io/v1")
    assert [r["kind"] for r in slices["resources"]] == ["EndpointSlice"]
    # the official client reads the version for `check --pre-install`-like code
    info = kubernetes.client.VersionApi(api.api_client()).get_code()
    assert info.major == "1" and info.git_version.startswith("v1.")


def test_create_get_list_delete_through_the_official_client(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    created = v1.create_namespaced_pod("default", pod("web-1", labels={"app": "web"}))
    assert created.metadata.uid and created.metadata.creation_timestamp and created.status.phase == "Pending"
    got = v1.read_namespaced_pod("web-1", "default")
    assert got.metadata.resource_version == created.metadata.resource_version
    listed = v1.list_namespaced_pod("default")
    assert [p.metadata.name for p in listed.items] == ["web-1"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    everywhere = v1.list_pod_for_all_namespaces()
    assert [p.metadata.name for p in everywhere.items] == ["web-1"]
    deleted = v1.delete_namespaced_pod("web-1", "default")
    assert deleted.metadata.name == "web-1"
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod("web-1", "default")
    assert err.value.status == 404


def test_errors_are_status_objects_with_the_real_reasons(api: KubeApiServer) -> None:
    status, body = raw(api, "GET", "/api/v1/namespaces/default/pods/nope")
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "nope", "group": "", "kind": "pods"},
    }
    assert raw(api, "POST", "/api/v1/namespaces/default/pods", pod("a"))[0] == 201
    status, body = raw(api, "POST", "/api/v1/namespaces/default/pods", pod("a"))
    assert (status, body["reason"], body["message"]) == (409, "AlreadyExists", 'pods "a" already exists')
    status, body = raw(api, "POST", "/api/v1/namespaces/missing/pods", pod("a", namespace="missing"))
    assert (status, body["reason"], body["message"]) == (404, "NotFound", 'namespaces "missing" not found')
    status, body = raw(api, "POST", "/api/v1/namespaces/default/pods", pod("b", namespace="other"))
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = raw(api, "POST", "/api/v1/namespaces/default/pods", {"metadata": {}})
    assert (status, body["reason"]) == (422, "Invalid")
    status, body = raw(api, "GET", "/api/v1/namespaces/default/pods?labelSelector=a%20in%20(")
    assert (status, body["reason"]) == (400, "BadRequest")
    status, body = raw(api, "GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.bogus%3Dx")
    assert (status, body["message"]) == (400, "field label not supported: spec.bogus")
    assert raw(api, "GET", "/api/v1/widgets")[0] == 404


def test_generate_name_gives_a_fresh_name_each_time(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    body = {"metadata": {"generateName": "ev-"}, "involvedObject": {"kind": "Pod", "name": "a"}, "reason": "Hi"}
    names = {v1.create_namespaced_event("default", body).metadata.name for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("ev-") and len(n) == 8 for n in names)


def test_replace_with_a_stale_resource_version_is_a_conflict(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    first = v1.create_namespaced_service_account("default", {"metadata": {"name": "sa"}})
    v1.patch_namespaced_service_account("sa", "default", {"metadata": {"labels": {"x": "1"}}}, _content_type=MERGE)
    stale = api.api_client().sanitize_for_serialization(first)
    status, body = raw(api, "PUT", "/api/v1/namespaces/default/serviceaccounts/sa", stale)
    assert (status, body["reason"], body["code"]) == (409, "Conflict", 409)
    assert "the object has been modified" in body["message"]
    stale["metadata"].pop("resourceVersion")  # an unconditional update is allowed
    status, body = raw(api, "PUT", "/api/v1/namespaces/default/serviceaccounts/sa", stale)
    assert status == 200 and "labels" not in body["metadata"]
    assert (
        raw(api, "PUT", "/api/v1/namespaces/default/serviceaccounts/none", dict(stale, metadata={"name": "none"}))[0]
        == 404
    )


def test_delete_preconditions_and_what_delete_answers(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_service_account("default", {"metadata": {"name": "sa"}})
    status, body = raw(api, "DELETE", "/api/v1/namespaces/default/serviceaccounts/sa", {"preconditions": {"uid": "x"}})
    assert (status, body["reason"]) == (409, "Conflict")
    ev = v1.create_namespaced_event("default", {"metadata": {"name": "e"}, "involvedObject": {}})
    status, body = raw(api, "DELETE", "/api/v1/namespaces/default/events/e")
    assert status == 200 and body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"]["uid"] == ev.metadata.uid


def test_deleting_a_namespace_deletes_what_is_in_it(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespace({"metadata": {"name": "shop"}})
    v1.create_namespaced_pod("shop", pod("a", namespace="shop"))
    v1.create_namespaced_service("shop", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
    v1.delete_namespace("shop")
    assert v1.list_pod_for_all_namespaces().items == []
    assert v1.list_service_for_all_namespaces().items == []


def test_chunked_list_and_an_expired_continue_token(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    for i in range(5):
        v1.create_namespaced_pod("default", pod(f"p{i}"))
    first = v1.list_namespaced_pod("default", limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"] and first.metadata.remaining_item_count == 3
    v1.create_namespaced_pod("default", pod("p9"))  # after the first chunk: not in the consistent list
    rest = v1.list_namespaced_pod("default", limit=10, _continue=first.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["p2", "p3", "p4"] and not rest.metadata._continue
    assert rest.metadata.resource_version == first.metadata.resource_version
    api.compact()
    status, body = raw(api, "GET", f"/api/v1/namespaces/default/pods?limit=2&continue={first.metadata._continue}")
    assert (status, body["reason"], body["code"]) == (410, "Expired", 410)


def test_list_at_an_exact_resource_version(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a"))
    at = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", pod("b"))
    v1.delete_namespaced_pod("a", "default")
    then = v1.list_namespaced_pod("default", resource_version=at, resource_version_match="Exact")
    assert [p.metadata.name for p in then.items] == ["a"]
    api.compact()
    status, body = raw(api, "GET", f"/api/v1/namespaces/default/pods?resourceVersion={at}&resourceVersionMatch=Exact")
    assert (status, body["reason"]) == (410, "Expired")
    too_new = int(at) + 1000
    status, body = raw(api, "GET", f"/api/v1/namespaces/default/pods?resourceVersion={too_new}")
    assert (status, body["reason"]) == (504, "Timeout")
