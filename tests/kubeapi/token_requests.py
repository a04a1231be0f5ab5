"""TokenRequest (authentication.k8s.io/v1): `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`.

What the kubelet calls to mint a pod's projected ServiceAccount token, answered as kube-apiserver does:
the ServiceAccount must exist (404), `spec.expirationSeconds` defaults to 3600 and is refused below 600 s
(10 minutes) or above 2^32 s with 422 Invalid, `spec.audiences` defaults to the API server's own, and a
`spec.boundObjectRef` may name a Pod only here (the real server also binds Secrets and Nodes; any other kind is
a 400), which must exist (404), run as that ServiceAccount (400) and have the uid given, if one is (409
Conflict). The answer (201) is the request with `status.token` and `status.expirationTimestamp` (RFC 3339, UTC).
A test that needs a token already expired or about to expire uses `Tokens.service_account(..., ttl=...)`, as
the real server gives no way to ask for one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from tests.kubeapi import errors
from tests.kubeapi.store import Store
from tests.kubeapi.tokens import API_AUDIENCES, Tokens

MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
DEFAULT_EXPIRATION = 3600


def is_token_request(segments: list[str]) -> bool:
    """Whether the path after /api/v1 is `namespaces/<ns>/serviceaccounts/<name>/token`."""
    return len(segments) == 5 and segments[0] == "namespaces" and segments[2:5:2] == ["serviceaccounts", "token"]


def with_discovery(core: dict[str, Any]) -> dict[str, Any]:
    """/api/v1's resource list with the subresource, as the real server lists it."""
    entry = {
        "name": "serviceaccounts/token",
        "singularName": "",
        "namespaced": True,
        "group": "authentication.k8s.io",
        "version": "v1",
        "kind": "TokenRequest",
        "verbs": ["create"],
    }
    return {**core, "resources": [*core["resources"], entry]}


def _invalid(name: str, field: str, value: object, why: str) -> errors.ApiError:
    message = f'TokenRequest.authentication.k8s.io "{name}" is invalid: {field}: Invalid value: {value}: {why}'
    causes = [{"reason": "FieldValueInvalid", "message": f"Invalid value: {value}: {why}", "field": field}]
    return errors.ApiError(
        "Invalid", message, {"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest", "causes": causes}
    )


def _bound_pod(store: Store, namespace: str, sa: str, ref: dict[str, Any]) -> dict[str, Any]:
    kind, api_version = ref.get("kind", ""), ref.get("apiVersion", "")
    if (kind, api_version) != ("Pod", "v1"):
        group_version = api_version if "/" in api_version else f"/{api_version}"
        raise errors.bad_request(f"cannot bind token to object of type {group_version}, Kind={kind}")
    name = ref.get("name", "")
    pod = store.get(store.types[("", "v1", "pods")], namespace, name)  # 404 `pods "x" not found`
    if (pod.get("spec") or {}).get("serviceAccountName", "default") != sa:
        raise errors.bad_request(
            f'cannot bind token for serviceaccount "{sa}" to pod running with different serviceaccount name.'
        )
    uid = ref.get("uid")
    if uid and uid != pod["metadata"]["uid"]:
        raise errors.ApiError(
            "Conflict",
            f'Operation cannot be fulfilled on Pod "{name}": the UID in the bound object reference ({uid}) does '
            "not match the UID in record. The object might have been deleted and then recreated",
            {"name": name, "kind": "Pod"},
        )
    return pod


def request_token(store: Store, tokens: Tokens, namespace: str, name: str, body: Any) -> dict[str, Any]:
    """Answer a TokenRequest body for ServiceAccount `namespace/name`; raises ApiError as the real server would."""
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request was not a TokenRequest object")
    account = store.get(store.types[("", "v1", "serviceaccounts")], namespace, name)
    meta = dict(body.get("metadata") or {})
    if meta.get("name") and meta["name"] != name:
        raise errors.bad_request("name in URL does not match name in TokenRequest body")
    spec = dict(body.get("spec") or {})
    seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise errors.bad_request(f"spec.expirationSeconds: expected an integer, got {seconds!r}")
    if seconds < MIN_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", seconds, "may not specify a duration less than 10 minutes")
    if seconds > MAX_EXPIRATION:
        raise _invalid(name, "spec.expirationSeconds", seconds, "may not specify a duration larger than 2^32 seconds")
    audiences = list(spec.get("audiences") or API_AUDIENCES)
    pod = None
    ref = spec.get("boundObjectRef")
    if ref:
        pod = _bound_pod(store, namespace, name, ref)
        ref = {**ref, "uid": pod["metadata"]["uid"]}  # the server fills in the uid it bound to
    now = time.time()
    token = tokens.service_account(
        namespace, name, audiences, ttl=float(seconds), pod=pod, sa_uid=account["metadata"]["uid"]
    )
    expires = datetime.fromtimestamp(int(now) + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out_spec: dict[str, Any] = {"audiences": audiences, "expirationSeconds": seconds}
    if ref:
        out_spec["boundObjectRef"] = ref
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }
