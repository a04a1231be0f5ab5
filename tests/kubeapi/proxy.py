"""Two API-server answers that are not plain storage: the service proxy and SelfSubjectAccessReview.

Service proxy (`/api/v1/namespaces/<ns>/services/<name>[:<port>]/proxy/<path>`): kube-apiserver resolves the
Service's port (by name or number), picks a ready endpoint of the Service from its EndpointSlices (label
`kubernetes.io/service-name`) and forwards the request to that address and the slice's port of the same name.
This server does the same, so a test makes a real process reachable by writing the Service and an EndpointSlice
whose address is the process's loopback address, as the EndpointSlice controller would for a pod.

SelfSubjectAccessReview: this server authorizes every request, so a review answers allowed unless a test put the
(verb, group, resource) in `KubeApiServer.denied`, to show what a client does without a permission.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from tests.kubeapi import errors
from tests.kubeapi.store import Store

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


def is_service_proxy(segments: list[str]) -> bool:
    """Segments after /api/v1: namespaces/<ns>/services/<name>/proxy[/...]."""
    return len(segments) >= 5 and segments[0] == "namespaces" and segments[2] == "services" and segments[4] == "proxy"


def _service_port(service: dict[str, Any], wanted: str) -> dict[str, Any]:
    ports = service.get("spec", {}).get("ports") or []
    if not wanted:
        if len(ports) == 1:
            return dict(ports[0])
        raise errors.ApiError(
            "ServiceUnavailable", f"no port given and service {service['metadata']['name']!r} has several"
        )
    for port in ports:
        if port.get("name") == wanted or str(port.get("port")) == wanted:
            return dict(port)
    raise errors.ApiError(
        "ServiceUnavailable", f"no service port {wanted!r} found for service {service['metadata']['name']!r}"
    )


def resolve(store: Store, namespace: str, name_port: str) -> tuple[str, int]:
    """(address, port) of a ready endpoint behind `name[:port]` in `namespace`, as kube-apiserver picks one."""
    name, _, wanted = name_port.partition(":")
    services = store.find("", "v1", "services")
    service = store.get(services, namespace, name)
    port = _service_port(service, wanted)
    slices_type = store.find("discovery.k8s.io", "v1", "endpointslices")
    slices, _ = store.snapshot(slices_type, None)
    for (ns, _slice_name), eps in sorted(slices.items()):
        if ns != namespace or (eps.get("metadata", {}).get("labels") or {}).get("kubernetes.io/service-name") != name:
            continue
        target = next((p["port"] for p in eps.get("ports") or [] if p.get("name", "") == port.get("name", "")), None)
        if target is None:
            continue
        for endpoint in eps.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True) and endpoint.get("addresses"):
                return endpoint["addresses"][0], int(target)
    raise errors.ApiError("ServiceUnavailable", f'no endpoints available for service "{name}"')


async def service_proxy(store: Store, request: web.Request, segments: list[str]) -> web.StreamResponse:
    namespace, name_port = unquote(segments[1]), unquote(segments[3])
    rest = "/".join(unquote(s) for s in segments[5:])
    address, port = resolve(store, namespace, name_port)
    url = f"http://{address}:{port}/{rest}"
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP | {"authorization"}}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(
                request.method, url, params=request.query, headers=headers, data=await request.read()
            ) as upstream:
                body = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                return web.Response(status=upstream.status, body=body, headers=out)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # kube-apiserver answers 503 with the dial error when the endpoint does not answer
        raise errors.ApiError("ServiceUnavailable", f"error trying to reach service: {exc}") from None


def access_review(body: Any, denied: set[tuple[str, str, str]]) -> dict[str, Any]:
    """The SelfSubjectAccessReview sent back with its status filled in."""
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        raise errors.bad_request("a SelfSubjectAccessReview needs a spec")
    attrs = body["spec"].get("resourceAttributes") or {}
    key = (attrs.get("verb", ""), attrs.get("group", ""), attrs.get("resource", ""))
    allowed = key not in denied
    status: dict[str, Any] = {"allowed": allowed}
    if not allowed:
        status["reason"] = "denied by the test API server (KubeApiServer.denied)"
    return {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": body["spec"],
        "status": status,
    }
