"""The Kubernetes API as the mesh reads and writes it: the resources it watches, and raw JSON requests.

Requests go through the official client's `ApiClient` (its configuration, authentication, TLS and connection
pool) but carry and return plain JSON: objects stay Kubernetes-shaped dicts, exactly as the file source
hands them to the store, and every kind (core, CRD, Gateway API) is read the same way. Blocking: call these
from worker threads, never from the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Resource:
    """One watched resource type: where it lives in the URL space and the kind its objects carry."""

    group: str
    """"" for the core group."""
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:
        """The collection across all namespaces (what a cluster-wide watch lists)."""
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/{self.plural}"

    def object_path(self, namespace: str, name: str) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scope = f"/namespaces/{namespace}" if self.namespaced else ""
        return f"{prefix}{scope}/{self.plural}/{name}"

    @property
    def label(self) -> str:
        """`Pod`, or `AuthorizationPolicy.security.istio.io` (as kubectl names a kind of a group): two groups may
        serve one kind, and their objects must not be taken for each other."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


NAMESPACES = Resource("", "v1", "Namespace", "namespaces", namespaced=False)
NODES = Resource("", "v1", "Node", "nodes", namespaced=False)
PODS = Resource("", "v1", "Pod", "pods")
SERVICES = Resource("", "v1", "Service", "services")
SERVICE_ACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
TRAFFIC_POLICIES = Resource("networking.meshlet.io", "v1", "TrafficPolicy", "trafficpolicies")
SECURITY = tuple(
    Resource(group, "v1", kind, plural)
    for group in ("security.meshlet.io", "security.istio.io")
    for kind, plural in (
        ("AuthorizationPolicy", "authorizationpolicies"),
        ("PeerAuthentication", "peerauthentications"),
    )
)
CONTROL_RESOURCES = (
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    SERVICE_ACCOUNTS,
    *SECURITY,
    HTTP_ROUTES,
    TRAFFIC_POLICIES,
)
"""Every kind the mesh model converts (`control.store.CONVERTERS`). EndpointSlices are not among them: the model
selects a Service's pods itself, from the Pods it already watches, so watching them would only cost memory."""
AGENT_RESOURCES = (NAMESPACES, PODS)


def request(
    client: Any,
    method: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = JSON,
    timeout: float | tuple[float, float] = 30.0,
) -> Any:
    """Send one request; returns the urllib3 response, unread (a watch is read as a stream).

    Raises `ApiException` for any status outside 2xx (with the server's Status as its body) and urllib3's or the
    socket's errors when the server cannot be reached."""
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = content_type
    params = client.param_serialize(
        method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = client.call_api(*params, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response


def request_json(
    client: Any,
    method: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = JSON,
    timeout: float | tuple[float, float] = 30.0,
) -> Any:
    """`request`, with the answer read and decoded."""
    response = request(client, method, path, query, body, content_type, timeout)
    try:
        return json.loads(response.data or b"null")
    finally:
        response.release_conn()


def status_reason(exc: ApiException) -> str:
    """The server's own message from a Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or b"{}")
    except (ValueError, TypeError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or exc.status)
