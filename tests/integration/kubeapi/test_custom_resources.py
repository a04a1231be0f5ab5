"""CRD-served resources: registered by a test or by creating a CustomResourceDefinition, used through
CustomObjectsApi like any cluster's."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.integration.kubeapi.conftest import RawWatch, raw
from tests.kubeapi import KubeApiServer, ResourceType

GROUP, VERSION, PLURAL = "security.meshlet.io", "v1", "authorizationpolicies"


def _policy(name: str, action: str = "ALLOW") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name},
        "spec": {"action": action, "rules": [{"from": [{"source": {"principals": ["a"]}}]}]},
    }


@pytest.fixture
def policies(api: KubeApiServer) -> KubeApiServer:
    api.store.register(ResourceType.custom(GROUP, VERSION, "AuthorizationPolicy", PLURAL))
    return api


def test_custom_objects_round_trip(policies: KubeApiServer) -> None:
    crs = policies.custom_objects()
    created = crs.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _policy("p1"))
    assert created["metadata"]["generation"] == 1 and created["kind"] == "AuthorizationPolicy"
    patched = crs.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "p1", {"spec": {"action": "DENY"}})
    assert patched["spec"]["action"] == "DENY" and patched["metadata"]["generation"] == 2
    assert patched["spec"]["rules"]  # a merge patch (the client's default here) keeps the other fields
    listed = crs.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert listed["kind"] == "AuthorizationPolicyList" and [i["metadata"]["name"] for i in listed["items"]] == ["p1"]
    crs.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "p1")
    with pytest.raises(ApiException) as err:
        crs.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "p1")
    assert err.value.status == 404


def test_strategic_merge_is_refused_for_custom_resources(policies: KubeApiServer) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/p1"
    assert raw(policies, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}", _policy("p1"))[0] == 201
    status, body = raw(policies, "PATCH", path, {"spec": {}}, "application/strategic-merge-patch+json")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")


def test_the_status_of_a_custom_resource_is_its_own(policies: KubeApiServer) -> None:
    crs = policies.custom_objects()
    crs.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, dict(_policy("p1"), status={"x": 1}))
    got = crs.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "p1")
    assert "status" not in got
    cond = {"conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 1}]}
    written = crs.patch_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "p1", {"status": cond})
    assert written["status"] == cond and written["metadata"]["generation"] == 1
    spec_change = crs.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "p1", {"spec": {"action": "DENY"}}
    )
    assert spec_change["status"] == cond


def test_a_created_crd_serves_its_kind_and_discovery_shows_it(api: KubeApiServer) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
        "spec": {
            "group": "gateway.networking.k8s.io",
            "scope": "Namespaced",
            "names": {
                "kind": "HTTPRoute",
                "plural": "httproutes",
                "singular": "httproute",
                "listKind": "HTTPRouteList",
            },
            "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}],
        },
    }
    ext = kubernetes.client.ApiextensionsV1Api(api.api_client())
    ext.create_custom_resource_definition(crd)  # type: ignore[arg-type]  # dicts are accepted
    _, group = raw(api, "GET", "/apis/gateway.networking.k8s.io/v1")
    assert {r["name"] for r in group["resources"]} == {"httproutes", "httproutes/status"}
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"}, "spec": {}}
    api.custom_objects().create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", "default", "httproutes", route
    )
    ext.delete_custom_resource_definition("httproutes.gateway.networking.k8s.io")
    assert raw(api, "GET", "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes")[0] == 404


def test_every_served_version_of_a_crd_shows_the_same_objects_in_its_own_version(api: KubeApiServer) -> None:
    """As on a real server (one etcd key per object): an object written through v1beta1 is listed and watched
    through v1, answered as v1 (a `None` conversion), and the other way round. Istio's CRDs serve both."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "authorizationpolicies.security.istio.io"},
        "spec": {
            "group": "security.istio.io",
            "scope": "Namespaced",
            "names": {"kind": "AuthorizationPolicy", "plural": "authorizationpolicies"},
            "versions": [
                {"name": "v1", "served": True, "storage": True},
                {"name": "v1beta1", "served": True, "storage": False},
            ],
        },
    }
    kubernetes.client.ApiextensionsV1Api(api.api_client()).create_custom_resource_definition(crd)  # type: ignore[arg-type]
    crs = api.custom_objects()
    _, listed = raw(api, "GET", "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies")
    rv = listed["metadata"]["resourceVersion"]
    old = {"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy", "metadata": {"name": "p"},
           "spec": {"action": "DENY"}}  # fmt: skip
    crs.create_namespaced_custom_object("security.istio.io", "v1beta1", "default", "authorizationpolicies", old)
    got = crs.get_namespaced_custom_object("security.istio.io", "v1", "default", "authorizationpolicies", "p")
    assert (got["apiVersion"], got["spec"]) == ("security.istio.io/v1", {"action": "DENY"})
    [item] = crs.list_namespaced_custom_object("security.istio.io", "v1", "default", "authorizationpolicies")["items"]
    assert item["metadata"]["name"] == "p"
    path = f"/apis/security.istio.io/v1/namespaces/default/authorizationpolicies?watch=1&resourceVersion={rv}"
    with RawWatch(api, path) as watch:
        event = watch.next()
    assert event is not None and (event["type"], event["object"]["apiVersion"]) == ("ADDED", "security.istio.io/v1")
    back = crs.get_namespaced_custom_object("security.istio.io", "v1beta1", "default", "authorizationpolicies", "p")
    assert back["apiVersion"] == "security.istio.io/v1beta1"
