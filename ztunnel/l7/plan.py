"""What a request to a Service port becomes before any endpoint is chosen: its HTTPRoute rule and filters, its
backend cluster, its rate limit, its timeouts and retries. Pure apart from the clusters' counters.

`plan` follows Gateway API (HTTPRoute v1, GAMMA) for a request to `port` of Service `parent`:
- with routes attached: the rule `routing.select` picks, or 404 NR when none matches; its filters in order
  (RequestRedirect answers 301/302 with the Location; RequestHeaderModifier and URLRewrite change the request;
  ResponseHeaderModifier the response; RequestMirror names a copy's destination); a backendRef by weight, 500
  when there is none or it does not resolve;
- without routes: the parent Service itself is the backend;
- the rate limits of the parent's TrafficPolicy and of the backend's (when another Service): 429 RL with
  Envoy's `x-ratelimit-*` headers, which allowed responses carry too;
- the rule's `timeouts` and `retry` as the session's `RequestPolicy`;
- the consistent-hash key when the backend's policy hashes (a header, a cookie, the source IP). A cookie policy
  with a `ttl` gives a client without the cookie a new one (`set-cookie` on the response), so its next
  requests keep to the same endpoint.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from meshlet_contracts.routes import (
    BackendRef,
    HeaderModifier,
    HTTPRoute,
    RequestRedirect,
    RouteRule,
    URLRewrite,
)
from ztunnel.l7.clusters import Cluster, Clusters
from ztunnel.l7.exchange import Reply, RequestPolicy
from ztunnel.l7.heads import origin_form
from ztunnel.l7.messages import Head, Headers
from ztunnel.l7.ratelimit import Decision
from ztunnel.l7.routing import (
    BackendError,
    NoRoute,
    header_value,
    invalid_backend,
    modify_headers,
    pick_backend,
    redirect_location,
    rewrite_request,
    select,
    split_target,
)
from ztunnel.state.mesh import MeshIndex, Service

NO_ROUTE = Reply(404, "", "NR", "no HTTPRoute rule matches the request")
RATE_LIMITED_BODY = "local_rate_limited"
DEFAULT_BACKOFF = 0.025
"""Seconds before the first retry when a `retry` gives no `backoff` (Envoy's base interval)."""
DEFAULT_RETRIES = 2
"""Tries after the first when a `retry` gives no `attempts` (Istio's default)."""


@dataclass(slots=True)
class Plan:
    """Where a request goes (a backend cluster and its Service) and how (policy, mirrors, response edits)."""

    cluster: Cluster
    service: Service
    hash_key: str | bytes | None = None
    policy: RequestPolicy | None = None
    mirrors: tuple[tuple[Cluster, Service], ...] = ()
    response_edit: Callable[[Headers], Headers] | None = None
    route: str = ""
    """The HTTPRoute's `namespace/name` ("" without one)."""


def plan(
    index: MeshIndex,
    clusters: Clusters,
    parent: Service,
    port: int,
    head: Head,
    source: tuple[str, str],
    now: float,
    rng: random.Random,
) -> Plan | Reply:
    """The plan for `head` sent to `port` of `parent` by `source` (SPIFFE identity, IP)."""
    parent_key = f"{parent.namespace}/{parent.name}"
    routes = index.routes_for(parent_key, port)
    if head.target[:1] != "/":
        origin_form(head)
    parent_cluster = clusters.get(index, parent_key, port)
    if not routes:
        result = Plan(parent_cluster, parent)
        extra = _rate_limit(parent_cluster, None, "", source[0], now)
        if isinstance(extra, Reply):
            return extra
        result.hash_key, cookie = _hash_key(parent_cluster, head, source[1])
        _edit_response(result, (), [*extra, *cookie])
        return result
    path, query = split_target(head.target)
    chosen = select(routes, head.method, path, head.headers, query)
    if isinstance(chosen, NoRoute):
        return NO_ROUTE
    rule, route = chosen.rule, chosen.route
    response_filters: list[HeaderModifier] = []
    mirrors: list[tuple[Cluster, Service]] = []
    for f in rule.filters:
        settings = f.settings
        if f.type == "RequestRedirect":
            assert isinstance(settings, RequestRedirect)
            host = (head.get(b"host") or b"").decode("latin-1")
            if not host:  # an HTTP/1.0 request may have none: the Location names the Service, never `http:///`
                host = parent.hostname or f"{parent.name}.{parent.namespace}"
            location = redirect_location(settings, chosen.match, "http", host, port, head.target)
            return Reply(settings.status_code, "", "-", "redirected by route", ((b"location", location.encode()),))
        if f.type == "RequestHeaderModifier":
            assert isinstance(settings, HeaderModifier)
            head.replace_headers(modify_headers(head.headers, settings))
        elif f.type == "URLRewrite":
            assert isinstance(settings, URLRewrite)
            target, headers = rewrite_request(head.target, head.headers, chosen.match, settings)
            head.target = target
            head.replace_headers(headers)
        elif f.type == "ResponseHeaderModifier":
            assert isinstance(settings, HeaderModifier)
            response_filters.append(settings)
        elif f.type == "RequestMirror":
            assert isinstance(settings, BackendRef)
            mirror = _backend(index, route, settings)
            if isinstance(mirror, Service):
                mirrors.append((clusters.get(index, settings.service, settings.port), mirror))
    backend = pick_backend(rule, rng)
    if isinstance(backend, BackendError):
        return Reply(500, "", "-", f"HTTPRoute {route.ref}: {backend.reason}")
    service = _backend(index, route, backend)
    if isinstance(service, str):
        return Reply(500, "", "-", f"HTTPRoute {route.ref}: {service}")
    cluster = clusters.get(index, backend.service, backend.port)
    extra = _rate_limit(parent_cluster, cluster, route.ref, source[0], now)
    if isinstance(extra, Reply):
        return extra
    result = Plan(cluster, service, policy=request_policy(rule), mirrors=tuple(mirrors), route=route.ref)
    result.hash_key, cookie = _hash_key(cluster, head, source[1])
    _edit_response(result, response_filters, [*extra, *cookie])
    return result


def request_policy(rule: RouteRule) -> RequestPolicy | None:
    """The session's timeouts and retries for a rule (cached per rule object: the same for every request)."""
    cached = _POLICIES.get(id(rule))
    if cached is not None and cached[0] is rule:
        return cached[1]
    retry = rule.retry
    policy = None
    if rule.timeout or rule.backend_timeout or retry is not None:
        policy = RequestPolicy(
            timeout=rule.timeout or None,  # 0 means no timeout, as Gateway API says
            try_timeout=rule.backend_timeout or None,
            retries=0 if retry is None else (DEFAULT_RETRIES if retry.attempts is None else retry.attempts),
            retry_codes=frozenset(retry.codes) if retry is not None else frozenset(),
            backoff=retry.backoff if retry is not None and retry.backoff else DEFAULT_BACKOFF,
        )
    if len(_POLICIES) > 4096:
        _POLICIES.clear()
    _POLICIES[id(rule)] = (rule, policy)
    return policy


_POLICIES: dict[int, tuple[RouteRule, RequestPolicy | None]] = {}


def _backend(index: MeshIndex, route: HTTPRoute, backend: BackendRef) -> Service | str:
    """The backend's Service, or why it cannot take requests (the 500 case)."""
    service = index.services.get(backend.service)
    reason = invalid_backend(route, backend, service.ports if service is not None else None)
    if reason is not None or service is None:
        return reason or f"Service {backend.service} not found"
    return service


def _rate_limit(
    parent: Cluster, backend: Cluster | None, route: str, identity: str, now: float
) -> list[tuple[bytes, bytes]] | Reply:
    """The rate limits in force (the parent Service's, the backend's): a 429, or the headers to answer with."""
    decision = None
    route_namespace, _, route_name = route.partition("/")
    for cluster in (parent, backend) if backend is not None and backend is not parent else (parent,):
        limiter = cluster.rate
        # A policy's `route` names an HTTPRoute by `namespace/name`, or by name one of the policy's own namespace
        # (the Service's): a route of that name in another namespace (a consumer route) is another route.
        same_namespace = route_namespace == cluster.service.partition("/")[0]
        if limiter is None or not (limiter.applies_to(route) or (same_namespace and limiter.applies_to(route_name))):
            continue
        decision = limiter.check(route, identity, now)
        if not decision.allowed:
            cluster.count("rate_limited")
            return Reply(429, RATE_LIMITED_BODY, "RL", f"rate limit of {cluster.service}", _lines(decision))
    return list(_lines(decision)) if decision is not None else []


def _lines(decision: Decision) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"x-ratelimit-limit", b"%d" % decision.limit),
        (b"x-ratelimit-remaining", b"%d" % decision.remaining),
        (b"x-ratelimit-reset", b"%d" % decision.reset),
    )


def _hash_key(cluster: Cluster, head: Head, source_ip: str) -> tuple[str | bytes | None, list[tuple[bytes, bytes]]]:
    """The consistent-hash input for the request, and a `set-cookie` to send when one was made for it."""
    lb = cluster.policy.load_balancer if cluster.policy is not None else None
    hashed = lb.consistent_hash if lb is not None else None
    if hashed is None:
        return None, []
    if hashed.use_source_ip:
        return source_ip, []
    if hashed.http_header_name:
        return header_value(head.headers, hashed.http_header_name), []
    cookie = hashed.http_cookie
    assert cookie is not None
    found = _cookie(head, cookie.name)
    if found is not None or cookie.ttl is None:
        return found, []
    made = secrets.token_hex(8)
    attributes = f"; Path={cookie.path}" if cookie.path else ""
    if cookie.ttl:
        attributes += f"; Max-Age={int(cookie.ttl)}"
    return made, [(b"set-cookie", f"{cookie.name}={made}{attributes}; HttpOnly".encode())]


def _cookie(head: Head, name: str) -> str | None:
    for value in head.values(b"cookie"):
        for pair in value.decode("latin-1").split(";"):
            key, _, found = pair.strip().partition("=")
            if key == name:
                return found
    return None


def _edit_response(result: Plan, filters: list[HeaderModifier] | tuple[()], extra: list[tuple[bytes, bytes]]) -> None:
    if not filters and not extra:
        return

    def edit(headers: Headers) -> Headers:
        for modifier in filters:
            headers = modify_headers(headers, modifier)
        return headers + extra if extra else headers

    result.response_edit = edit
