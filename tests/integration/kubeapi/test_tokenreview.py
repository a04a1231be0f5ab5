"""TokenReview: accepted tokens name the user and the bound pod; refused ones say why, as the real server does."""

from __future__ import annotations

from typing import Any

import kubernetes

from tests.integration.kubeapi.conftest import pod, raw
from tests.kubeapi import KubeApiServer

REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


def _review(api: KubeApiServer, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"token": token}
    if audiences is not None:
        spec["audiences"] = audiences
    status, body = raw(
        api, "POST", REVIEWS, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
    )
    assert status == 201
    return body["status"]  # type: ignore[no-any-return]


def test_a_bound_service_account_token_names_its_pod(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespace({"metadata": {"name": "meshlet-system"}})
    zt = v1.create_namespaced_pod("meshlet-system", pod("ztunnel-x", namespace="meshlet-system"))
    token = api.tokens.service_account(
        "meshlet-system", "ztunnel", ["meshlet"], pod=api.api_client().sanitize_for_serialization(zt)
    )
    spec = kubernetes.client.V1TokenReviewSpec(token=token, audiences=["meshlet"])
    reviews = kubernetes.client.AuthenticationV1Api(api.api_client())
    review: Any = reviews.create_token_review(kubernetes.client.V1TokenReview(spec=spec))
    assert review.status.authenticated is True and review.status.audiences == ["meshlet"]
    assert review.status.user.username == "system:serviceaccount:meshlet-system:ztunnel"
    assert "system:serviceaccounts:meshlet-system" in review.status.user.groups
    assert review.status.user.extra["authentication.kubernetes.io/pod-name"] == ["ztunnel-x"]
    assert review.status.user.extra["authentication.kubernetes.io/pod-uid"] == [zt.metadata.uid]
    assert review.status.user.extra["authentication.kubernetes.io/node-name"] == ["node-1"]


def test_refused_tokens_are_unauthenticated_with_a_reason(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    created = v1.create_namespaced_pod("default", pod("p"))
    as_dict = api.api_client().sanitize_for_serialization(created)
    unknown = _review(api, "nope", ["meshlet"])
    # Kubernetes omits `authenticated: false`; a client reads the absence as false
    assert "authenticated" not in unknown and unknown["user"] == {} and "token lookup failed" in unknown["error"]
    expired = api.tokens.service_account("default", "sa", ["meshlet"], ttl=-1)
    assert "expired" in _review(api, expired, ["meshlet"])["error"]
    other = api.tokens.service_account("default", "sa", ["vault"])
    assert "invalid for the target audiences" in _review(api, other, ["meshlet"])["error"]
    # no audiences in the review: the API server's own, which a `meshlet` token is not for
    assert "error" in _review(api, other)
    bound = api.tokens.service_account("default", "sa", ["meshlet"], pod=as_dict)
    assert _review(api, bound, ["meshlet"])["authenticated"] is True
    v1.delete_namespaced_pod("p", "default")
    assert 'pods "p" not found' in _review(api, bound, ["meshlet"])["error"]
    v1.create_namespaced_pod("default", pod("p"))  # same name, new uid: the old token stays invalid
    assert "does not match" in _review(api, bound, ["meshlet"])["error"]
    status, body = raw(api, "POST", REVIEWS, {"spec": {}})
    assert (status, body["reason"]) == (422, "Invalid")
    assert raw(api, "GET", REVIEWS)[0] == 405
