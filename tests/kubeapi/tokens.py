"""TokenReview (authentication.k8s.io/v1): tokens a test registers, reviewed as kube-apiserver does.

A token stands for a user; a bound ServiceAccount token also names its pod, which the real server puts in
`status.user.extra` as `authentication.kubernetes.io/pod-name` and `pod-uid` and checks still exists with that
uid. The token's audiences must intersect the review's (the server's own audiences when the review names none)
and `status.audiences` is that intersection. A refused token gets no `authenticated` field (false is omitted in
Kubernetes JSON) and an `error` string.
"""

from __future__ import annotations

import secrets
import time
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
    ) -> str:
        """Register a (bound) ServiceAccount token as the TokenRequest API would issue; returns it."""
        meta = (pod or {}).get("metadata", {})
        return self.add(
            token or secrets.token_urlsafe(24),
            Token(
                username=f"system:serviceaccount:{namespace}:{name}",
                uid=f"sa-uid-{namespace}-{name}",
                audiences=list(audiences),
                expires=time.time() + ttl,
                groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                pod_name=meta.get("name"),
                pod_uid=meta.get("uid"),
                namespace=namespace,
            ),
        )

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
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                extra["authentication.kubernetes.io/node-name"] = [node]
        user_info: dict[str, Any] = {"username": user.username, "uid": user.uid, "groups": list(user.groups)}
        if extra:
            user_info["extra"] = extra
        review["status"] = {"authenticated": True, "user": user_info, "audiences": granted}
        return review
