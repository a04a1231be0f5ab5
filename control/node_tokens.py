"""Node identity on Kubernetes: a ztunnel proves its node with its pod's projected ServiceAccount token.

The token (audience `meshlet`) is checked by the API server with a TokenReview, which also tells which pod it
is bound to (`status.user.extra`, pod-name and pod-uid: the kubelet mints projected tokens bound to their pod).
Control then requires the token's user to be the DaemonSet's ServiceAccount (`meshlet-system/meshlet-node` by
default), reads that pod and requires it to be running with the same uid: the node is its `spec.nodeName`.
So a token of another pod, one copied off a deleted ztunnel, or one minted for another audience names no node.

A successful review is cached briefly (at most `cache_ttl`, and never past the token's own `exp`), keyed by a
hash of the token, so a node's CSRs do not each cost a TokenReview; refusals are not cached, so a fixed token
is accepted at once. The pod is read on every request: a ztunnel pod deleted a second ago names no node.
The Kubernetes client blocks, so both calls run in worker threads. An API server that cannot be asked is
`review_failed` (503, retry), not a verdict on the token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from control.nodes import NODE_NAME, NodeAuthError

log = logging.getLogger(__name__)
AUDIENCE = "meshlet"
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
MAX_CACHED = 4096
"""Reviews kept at most (a node has one token at a time; this bounds what a flood of tokens can hold)."""


@dataclass(frozen=True, slots=True)
class Reviewed:
    """What an accepted TokenReview said about a token."""

    username: str
    pod_name: str
    pod_uid: str
    until: float  # monotonic time the cached review stops being used


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT-shaped token, read without verifying (the review verified it): it only bounds
    how long a review is cached. None when the token does not carry one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _api_failure(what: str, exc: Exception) -> NodeAuthError:
    if isinstance(exc, ApiException):
        detail = f"{exc.status} {exc.reason}"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return NodeAuthError("review_failed", f"cannot {what} (the API server did not answer: {detail}); retry", 503)


class NodeTokenAuthenticator:
    """Maps `Authorization: Bearer <token>` to a node name, or raises NodeAuthError with the reason."""

    def __init__(
        self,
        api_client: Any,
        namespace: str = "meshlet-system",
        service_account: str = "meshlet-node",
        audience: str = AUDIENCE,
        cache_ttl: float = 60.0,
        timeout: float = 5.0,
    ) -> None:
        self.api_client = api_client
        self.username = f"system:serviceaccount:{namespace}:{service_account}"
        self.namespace = namespace
        self.audience = audience
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self.reviews = 0
        """TokenReviews sent (tests check that the cache spares them)."""
        self._cache: dict[str, Reviewed] = {}

    async def authenticate(self, token: str) -> str:
        """The node whose ztunnel pod `token` belongs to."""
        if not token:
            raise NodeAuthError("token_invalid", "empty bearer token")
        reviewed = await self._reviewed(token)
        pod = await asyncio.to_thread(self._read_pod, reviewed.pod_name)
        if pod is None or (pod.metadata.uid or "") != reviewed.pod_uid:
            self._cache.pop(_key(token), None)
            raise NodeAuthError(
                "pod_gone",
                f"the token's pod {self.namespace}/{reviewed.pod_name} no longer exists (uid {reviewed.pod_uid})",
            )
        phase = pod.status.phase if pod.status is not None else None
        if phase != "Running" or pod.metadata.deletion_timestamp is not None:
            state = "terminating" if pod.metadata.deletion_timestamp is not None else f"phase {phase or 'unknown'}"
            raise NodeAuthError(
                "pod_not_running", f"the token's pod {self.namespace}/{reviewed.pod_name} is not running ({state})"
            )
        node = pod.spec.node_name if pod.spec is not None else None
        if not node or not NODE_NAME.fullmatch(node):
            raise NodeAuthError(
                "pod_not_running", f"the token's pod {self.namespace}/{reviewed.pod_name} is not on a node ({node!r})"
            )
        return str(node)

    async def _reviewed(self, token: str) -> Reviewed:
        key = _key(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit.until > now:
            return hit
        status = await asyncio.to_thread(self._review, token)
        if not status.authenticated:
            raise NodeAuthError(
                "token_invalid", f"the API server refused the token: {status.error or 'not authenticated'}"
            )
        user = status.user
        username = (user.username or "") if user is not None else ""
        if username != self.username:
            raise NodeAuthError(
                "not_ztunnel",
                f"the token is {username or 'anonymous'}'s; only {self.username} (the node DaemonSet) acts for a node",
            )
        extra = (user.extra if user is not None else None) or {}
        pod_name, pod_uid = (extra.get(POD_NAME) or [""])[0], (extra.get(POD_UID) or [""])[0]
        if not pod_name or not pod_uid:
            raise NodeAuthError(
                "token_not_bound",
                "the token is not bound to a pod (use the projected ServiceAccount token the kubelet mounts)",
            )
        lifetime = self.cache_ttl
        exp = token_expiry(token)
        if exp is not None:
            lifetime = min(lifetime, exp - time.time())
        reviewed = Reviewed(username, pod_name, pod_uid, now + lifetime)
        if lifetime > 0:
            self._remember(key, reviewed)
        return reviewed

    def _remember(self, key: str, reviewed: Reviewed) -> None:
        if len(self._cache) >= MAX_CACHED:
            now = time.monotonic()
            for k in [k for k, v in self._cache.items() if v.until <= now]:
                del self._cache[k]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[key] = reviewed

    def _review(self, token: str) -> Any:
        self.reviews += 1
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience]))
        try:
            review = client.AuthenticationV1Api(self.api_client).create_token_review(
                body, _request_timeout=self.timeout
            )
        except (ApiException, HTTPError, OSError) as exc:
            raise _api_failure("review the token", exc) from None
        return review.status

    def _read_pod(self, name: str) -> Any:
        try:
            return client.CoreV1Api(self.api_client).read_namespaced_pod(
                name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_failure(f"read pod {self.namespace}/{name}", exc) from None
        except (HTTPError, OSError) as exc:
            raise _api_failure(f"read pod {self.namespace}/{name}", exc) from None


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()  # the cache never holds the token itself
