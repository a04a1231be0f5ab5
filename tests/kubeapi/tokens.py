"""TokenReview (authentication.k8s.io/v1): tokens a test registers, reviewed as kube-apiserver does.

A token stands for a user; a bound ServiceAccount token also names its pod, which the real server puts in
`status.user.extra` as `authentication.kubernetes.io/pod-name` and `pod-uid` and checks still exists with that
uid. The token's audiences must intersect the review's (the server's own audiences when the review names none)
and `status.audiences` is that intersection. A refused token gets no `authenticated` field (false is omitted in
Kubernetes JSON) and an `error` string. As on a 1.30+ server, a pod-bound token also carries its pod's node
(`authentication.kubernetes.io/node-name`) and a `credential-id` (`JTI=<id>`).

Tokens look like the real ones (a JWT: header.claims.signature, base64url) so that a client which reads the
unverified `exp` claim (to cache a review no longer than the token lives) sees what it would in a cluster; the
signature is random, and only this server's registry says whether a token is valid. A token minted through
TokenRequest (`sa_uid` given) is also refused once its ServiceAccount is deleted or recreated, as the real one is.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.kubeapi import errors
from tests.kubeapi.store import Store

API_AUDIENCES = ["https://kubernetes.default.svc.cluster.local"]


@dataclass
class Token:
    username: str
    uid: str
    audiences: list[str]
    expires: float | None = None  # epoch seconds
    groups: list[str] = field(default_factory=list)
    pod_name: str | None = None
    pod_uid: str | None = None
    namespace: str | None = None
    node_name: str | None = None
    sa_name: str | None = None
    sa_uid: str | None = None  # checked against the ServiceAccount in the store (tokens from TokenRequest)
    jti: str = field(default_factory=lambda: str(uuid.uuid4()))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_shaped(user: Token, issued: float) -> str:
    """A token shaped like a ServiceAccount JWT carrying `user`'s claims (not signed by anything)."""
    claims: dict[str, object] = {
        "aud": user.audiences,
        "iat": int(issued),
        "nbf": int(issued),
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": user.jti,
        "sub": user.username,
        "kubernetes.io": {
            "namespace": user.namespace,
            "serviceaccount": {"name": user.sa_name, "uid": user.uid},
            **({"pod": {"name": user.pod_name, "uid": user.pod_uid}} if user.pod_name else {}),
            **({"node": {"name": user.node_name}} if user.node_name else {}),
        },
    }
    if user.expires is not None:
        claims["exp"] = int(user.expires)
    header = {"alg": "RS256", "kid": "kubeapi-test"}
    parts = [json.dumps(header).encode(), json.dumps(claims, separators=(",", ":")).encode(), secrets.token_bytes(32)]
    return ".".join(_b64(p) for p in parts)


class Tokens:
    """The tokens the server knows; `review` answers a TokenReview body."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.known: dict[str, Token] = {}

    def add(self, token: str, user: Token) -> str:
        self.known[token] = user
        return token

    def service_account(
        self,
        namespace: str,
        name: str,
        audiences: list[str],
        ttl: float = 3600.0,
        pod: dict[str, Any] | None = None,
        token: str | None = None,
        sa_uid: str | None = None,
    ) -> str:
        """Register a (bound) ServiceAccount token as the TokenRequest API would issue; returns it. A negative
        or small `ttl` gives a token the real API would not issue (it refuses less than 600 s): for tests."""
        meta = (pod or {}).get("metadata", {})
        now = time.time()
        user = Token(
            username=f"system:serviceaccount:{namespace}:{name}",
            uid=sa_uid or f"sa-uid-{namespace}-{name}",
            audiences=list(audiences),
            expires=now + ttl,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            pod_name=meta.get("name"),
            pod_uid=meta.get("uid"),
            namespace=namespace,
            node_name=((pod or {}).get("spec") or {}).get("nodeName"),
            sa_name=name,
            sa_uid=sa_uid,
        )
        return self.add(token or jwt_shaped(user, now), user)

    def _refuse(self, review: dict[str, Any], error: str) -> dict[str, Any]:
        review["status"] = {"user": {}, "error": error}
        return review

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") or {}
        if not spec.get("token"):
            raise errors.ApiError(
                "Invalid", 'TokenReview.authentication.k8s.io "" is invalid: spec.token: Required value'
            )
        review = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
        }
        user = self.known.get(spec["token"])
        if user is None:
            return self._refuse(review, "[invalid bearer token, token lookup failed]")
        if user.expires is not None and time.time() >= user.expires:
            return self._refuse(review, "[invalid bearer token, service account token has expired]")
        wanted = spec.get("audiences") or API_AUDIENCES
        granted = [a for a in wanted if a in user.audiences]
        if not granted:
            return self._refuse(
                review,
                f"[invalid bearer token, token audiences {user.audiences} is invalid for the target audiences"
                f" {wanted}]",
            )
        if user.sa_uid is not None:
            accounts = self.store.types[("", "v1", "serviceaccounts")]
            try:
                account = self.store.get(accounts, user.namespace or "", user.sa_name or "")
            except errors.ApiError:
                return self._refuse(review, f'[invalid bearer token, serviceaccounts "{user.sa_name}" not found]')
            if account["metadata"]["uid"] != user.sa_uid:
                return self._refuse(
                    review,
                    f"[invalid bearer token, service account UID ({account['metadata']['uid']}) does not match claim"
                    f" ({user.sa_uid})]",
                )
        extra: dict[str, list[str]] = {}
        if user.pod_name:
            pods = self.store.types[("", "v1", "pods")]
            try:
                pod = self.store.get(pods, user.namespace or "", user.pod_name)
            except errors.ApiError:
                return self._refuse(review, f'[invalid bearer token, pods "{user.pod_name}" not found]')
            if user.pod_uid and pod["metadata"]["uid"] != user.pod_uid:
                return self._refuse(
                    review,
                    f"[invalid bearer token, pod UID ({pod['metadata']['uid']}) does not match claim ({user.pod_uid})]",
                )
            extra["authentication.kubernetes.io/pod-name"] = [user.pod_name]
            extra["authentication.kubernetes.io/pod-uid"] = [pod["metadata"]["uid"]]
            node = user.node_name or (pod.get("spec") or {}).get("nodeName")
            if node:
                extra["authentication.kubernetes.io/node-name"] = [node]
        if user.username.startswith("system:serviceaccount:"):
            extra["authentication.kubernetes.io/credential-id"] = [f"JTI={user.jti}"]
        user_info: dict[str, Any] = {"username": user.username, "uid": user.uid, "groups": list(user.groups)}
        if extra:
            user_info["extra"] = extra
        review["status"] = {"authenticated": True, "user": user_info, "audiences": granted}
        return review
