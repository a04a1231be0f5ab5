"""What an install uses: the apps, RBAC and policy kinds found through discovery by the official DynamicClient,
server-side apply (create, then a no-op re-apply, then a change), a CRD that is Established and serves its
resource as soon as it is applied, SelfSubjectAccessReview, and the service proxy to a Service's ready endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.integration.kubeapi.conftest import raw
from tests.json_stub import json_server
from tests.kubeapi import KubeApiServer

APPLY = "application/apply-patch+yaml"


def dynamic(api: KubeApiServer) -> DynamicClient:
    return DynamicClient(api.api_client())


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
    },
}


@pytest.mark.parametrize(
    ("api_version", "kind", "namespaced"),
    [
        ("apps/v1", "Deployment", True),
        ("apps/v1", "DaemonSet", True),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", False),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", False),
        ("rbac.authorization.k8s.io/v1", "Role", True),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", True),
        ("policy/v1", "PodDisruptionBudget", True),
        ("v1", "ServiceAccount", True),
        ("v1", "ConfigMap", True),
        ("v1", "Secret", True),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", False),
    ],
)
def test_the_dynamic_client_finds_each_kind_an_install_applies(
    api: KubeApiServer, api_version: str, kind: str, namespaced: bool
) -> None:
    resource = dynamic(api).resources.get(api_version=api_version, kind=kind)
    assert resource.namespaced is namespaced
    assert resource.get(namespace="default" if namespaced else None).items == []


def test_server_side_apply_creates_then_a_same_reapply_changes_nothing_then_a_change_lands(
    api: KubeApiServer,
) -> None:
    deployments = dynamic(api).resources.get(api_version="apps/v1", kind="Deployment")
    first = deployments.server_side_apply(body=DEPLOYMENT, namespace="default", field_manager="meshlet", force=True)
    assert first.metadata.generation == 1
    assert [m.manager for m in first.metadata.managedFields] == ["meshlet"]
    again = deployments.server_side_apply(body=DEPLOYMENT, namespace="default", field_manager="meshlet", force=True)
    assert again.metadata.resourceVersion == first.metadata.resourceVersion
    changed = json.loads(json.dumps(DEPLOYMENT))
    changed["spec"]["replicas"] = 3
    third = deployments.server_side_apply(body=changed, namespace="default", field_manager="meshlet", force=True)
    assert (third.spec.replicas, third.metadata.generation) == (3, 2)


def test_apply_without_a_field_manager_is_refused(api: KubeApiServer) -> None:
    status, body = raw(api, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web", DEPLOYMENT, APPLY)
    assert (status, body["reason"]) == (400, "BadRequest")
    assert "fieldManager: Required value" in body["message"]


CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.io"},
    "spec": {
        "group": "example.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


def test_an_applied_crd_is_established_and_serves_its_kind_until_it_is_deleted(api: KubeApiServer) -> None:
    client = dynamic(api)
    crds = client.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    applied = crds.server_side_apply(body=CRD, field_manager="meshlet", force=True)
    conditions = {c.type: c.status for c in applied.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert applied.status.acceptedNames.kind == "Widget"
    widget = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 1}}
    status, _ = raw(api, "POST", "/apis/example.io/v1/namespaces/default/widgets", widget)
    assert status == 201
    crds.delete(name="widgets.example.io")
    status, body = raw(api, "GET", "/apis/example.io/v1/namespaces/default/widgets")
    assert (status, body["reason"]) == (404, "NotFound")


def test_self_subject_access_review_allows_unless_a_test_denies(api: KubeApiServer) -> None:
    authz = kubernetes.client.AuthorizationV1Api(api.api_client())

    def allowed(verb: str, group: str, resource: str) -> bool:
        attrs = kubernetes.client.V1ResourceAttributes(verb=verb, group=group, resource=resource)
        review = kubernetes.client.V1SelfSubjectAccessReview(
            spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs)
        )
        return bool(authz.create_self_subject_access_review(review).status.allowed)

    assert allowed("create", "apps", "daemonsets")
    api.denied.add(("create", "apps", "daemonsets"))
    assert not allowed("create", "apps", "daemonsets")
    assert allowed("create", "apps", "deployments")


@pytest.fixture
def backend() -> Iterator[int]:
    with json_server(lambda path: (200, {"path": path})) as port:
        yield port


def _service_with_endpoint(api: KubeApiServer, port: int, ready: bool = True) -> None:
    core = api.core_v1()
    core.create_namespaced_service(
        "default",
        {"metadata": {"name": "ops"}, "spec": {"ports": [{"name": "http", "port": 15014, "targetPort": 15014}]}},
    )
    discovery = kubernetes.client.DiscoveryV1Api(api.api_client())
    discovery.create_namespaced_endpoint_slice(
        "default",
        {
            "metadata": {"name": "ops-abc", "labels": {"kubernetes.io/service-name": "ops"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
        },
    )


def test_the_service_proxy_reaches_the_services_ready_endpoint(api: KubeApiServer, backend: int) -> None:
    _service_with_endpoint(api, backend)
    core = api.core_v1()
    answer = core.connect_get_namespaced_service_proxy_with_path("ops:15014", "default", "debug/status")
    assert json.loads(answer.replace("'", '"')) == {"path": "/debug/status"}
    status, body = raw(api, "GET", "/api/v1/namespaces/default/services/ops:http/proxy/x?y=1")
    assert (status, body) == (200, {"path": "/x?y=1"})


def test_the_service_proxy_answers_503_without_a_ready_endpoint(api: KubeApiServer, backend: int) -> None:
    _service_with_endpoint(api, backend, ready=False)
    with pytest.raises(ApiException) as err:
        api.core_v1().connect_get_namespaced_service_proxy_with_path("ops:15014", "default", "debug/status")
    assert err.value.status == 503
    assert json.loads(err.value.body)["message"] == 'no endpoints available for service "ops"'


def test_a_field_dropped_from_the_manifest_is_removed_unless_another_applier_owns_it(api: KubeApiServer) -> None:
    deployments = dynamic(api).resources.get(api_version="apps/v1", kind="Deployment")
    with_volume = json.loads(json.dumps(DEPLOYMENT))
    spec = with_volume["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "old", "emptyDir": {}}, {"name": "kept", "emptyDir": {}}]
    spec["containers"][0]["args"] = ["--old"]
    with_volume["metadata"]["labels"]["tier"] = "web"
    deployments.server_side_apply(body=with_volume, namespace="default", field_manager="meshlet", force=True)
    # another applier owns a label of its own, and the "kept" volume too
    other = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"team": "a"}},
        "spec": {"template": {"spec": {"volumes": [{"name": "kept", "emptyDir": {}}]}}},
    }
    deployments.server_side_apply(body=other, namespace="default", field_manager="someone", force=True)
    now = deployments.server_side_apply(body=DEPLOYMENT, namespace="default", field_manager="meshlet", force=True)
    got = now.to_dict()
    assert got["metadata"]["labels"] == {"app": "web", "team": "a"}
    pod = got["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["kept"]
    assert "args" not in pod["containers"][0]
    assert {m["manager"] for m in got["metadata"]["managedFields"]} == {"meshlet", "someone"}
