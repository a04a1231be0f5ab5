"""TokenRequest: the test API server mints ServiceAccount tokens the way kube-apiserver does for the kubelet."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import kubernetes

from tests.integration.kubeapi.conftest import pod, raw
from tests.kubeapi import KubeApiServer

REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
TOKEN = "/api/v1/namespaces/meshlet-system/serviceaccounts/meshlet-node/token"


def _setup(api: KubeApiServer) -> dict[str, Any]:
    v1 = api.core_v1()
    v1.create_namespace({"metadata": {"name": "meshlet-system"}})
    v1.create_namespaced_service_account("meshlet-system", {"metadata": {"name": "meshlet-node"}})
    spec = pod("ztunnel-a", node="node-7", namespace="meshlet-system")
    spec["spec"]["serviceAccountName"] = "meshlet-node"
    created: dict[str, Any] = api.api_client().sanitize_for_serialization(
        v1.create_namespaced_pod("meshlet-system", spec)
    )
    return created


def _request(body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", **body}


def _review(api: KubeApiServer, token: str, audiences: list[str]) -> dict[str, Any]:
    status, body = raw(api, "POST", REVIEWS, {"spec": {"token": token, "audiences": audiences}})
    assert status == 201
    return body["status"]  # type: ignore[no-any-return]


def test_a_token_bound_to_a_pod_is_minted_through_the_official_client_and_reviews_as_that_pod(
    api: KubeApiServer,
) -> None:
    zt = _setup(api)
    ref = kubernetes.client.V1BoundObjectReference(
        api_version="v1", kind="Pod", name="ztunnel-a", uid=zt["metadata"]["uid"]
    )
    spec = kubernetes.client.V1TokenRequestSpec(audiences=["meshlet"], expiration_seconds=600, bound_object_ref=ref)
    before = time.time()
    answer: Any = api.core_v1().create_namespaced_service_account_token(
        "meshlet-node", "meshlet-system", kubernetes.client.AuthenticationV1TokenRequest(spec=spec)
    )
    token = answer.status.token
    expires = answer.status.expiration_timestamp
    assert before + 598 <= expires.timestamp() <= time.time() + 601
    assert answer.spec.bound_object_ref.uid == zt["metadata"]["uid"]
    # shaped like the real JWT: its unverified claims say who, for whom, until when
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert (claims["aud"], claims["exp"]) == (["meshlet"], int(expires.timestamp()))
    assert claims["kubernetes.io"]["pod"] == {"name": "ztunnel-a", "uid": zt["metadata"]["uid"]}
    status = _review(api, token, ["meshlet"])
    assert status["authenticated"] is True
    assert status["user"]["username"] == "system:serviceaccount:meshlet-system:meshlet-node"
    extra = status["user"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["ztunnel-a"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [zt["metadata"]["uid"]]
    assert extra["authentication.kubernetes.io/node-name"] == ["node-7"]
    assert extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")
    assert "token audiences" in _review(api, token, ["vault"])["error"]


def test_defaults_are_an_hour_and_the_api_servers_audiences(api: KubeApiServer) -> None:
    _setup(api)
    status, body = raw(api, "POST", TOKEN, _request({"spec": {}}))
    assert status == 201
    assert body["spec"]["expirationSeconds"] == 3600
    assert body["spec"]["audiences"] == ["https://kubernetes.default.svc.cluster.local"]
    assert "boundObjectRef" not in body["spec"]
    expires = datetime.strptime(body["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires.timestamp() - (time.time() + 3600)) < 5
    assert _review(api, body["status"]["token"], ["meshlet"]).get("authenticated") is None


def test_invalid_requests_are_refused_as_the_real_server_refuses_them(api: KubeApiServer) -> None:
    zt = _setup(api)
    status, body = raw(api, "POST", TOKEN, _request({"spec": {"expirationSeconds": 599}}))
    assert (status, body["reason"]) == (422, "Invalid")
    assert (
        "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        in (body["message"])
    )
    status, body = raw(api, "POST", TOKEN, _request({"spec": {"expirationSeconds": (1 << 32) + 1}}))
    assert (status, body["reason"]) == (422, "Invalid")
    missing_sa = TOKEN.replace("meshlet-node", "nobody")
    status, body = raw(api, "POST", missing_sa, _request({"spec": {}}))
    assert (status, body["reason"], body["message"]) == (404, "NotFound", 'serviceaccounts "nobody" not found')
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "gone"}
    status, body = raw(api, "POST", TOKEN, _request({"spec": {"boundObjectRef": ref}}))
    assert (status, body["message"]) == (404, 'pods "gone" not found')
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "ztunnel-a", "uid": "not-its-uid"}
    status, body = raw(api, "POST", TOKEN, _request({"spec": {"boundObjectRef": ref}}))
    assert (status, body["reason"]) == (409, "Conflict") and "does not match the UID in record" in body["message"]
    ref = {"kind": "Deployment", "apiVersion": "apps/v1", "name": "x"}
    status, body = raw(api, "POST", TOKEN, _request({"spec": {"boundObjectRef": ref}}))
    assert (status, body["message"]) == (400, "cannot bind token to object of type apps/v1, Kind=Deployment")
    other = TOKEN.replace("meshlet-node", "default")
    api.core_v1().create_namespaced_service_account("meshlet-system", {"metadata": {"name": "default"}})
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "ztunnel-a", "uid": zt["metadata"]["uid"]}
    status, body = raw(api, "POST", other, _request({"spec": {"boundObjectRef": ref}}))
    assert status == 400 and "different serviceaccount name" in body["message"]
    assert raw(api, "GET", TOKEN)[0] == 405


def test_a_minted_token_dies_with_its_pod_and_its_service_account(api: KubeApiServer) -> None:
    zt = _setup(api)
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "ztunnel-a", "uid": zt["metadata"]["uid"]}

    def mint() -> str:
        status, body = raw(api, "POST", TOKEN, _request({"spec": {"audiences": ["meshlet"], "boundObjectRef": ref}}))
        assert status == 201, body
        return body["status"]["token"]  # type: ignore[no-any-return]

    token = mint()
    assert _review(api, token, ["meshlet"])["authenticated"] is True
    v1 = api.core_v1()
    v1.delete_namespaced_service_account("meshlet-node", "meshlet-system")
    assert 'serviceaccounts "meshlet-node" not found' in _review(api, token, ["meshlet"])["error"]
    v1.create_namespaced_service_account("meshlet-system", {"metadata": {"name": "meshlet-node"}})
    assert "service account UID" in _review(api, token, ["meshlet"])["error"]  # a new account, not the token's
    token = mint()
    v1.delete_namespaced_pod("ztunnel-a", "meshlet-system")
    assert 'pods "ztunnel-a" not found' in _review(api, token, ["meshlet"])["error"]


def test_discovery_lists_the_token_subresource(api: KubeApiServer) -> None:
    status, body = raw(api, "GET", "/api/v1")
    [entry] = [r for r in body["resources"] if r["name"] == "serviceaccounts/token"]
    assert (status, entry["kind"], entry["group"], entry["verbs"]) == (
        200,
        "TokenRequest",
        "authentication.k8s.io",
        ["create"],
    )
