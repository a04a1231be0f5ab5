"""What a request to a Service port becomes (`ztunnel.l7.plan`): the backend, the route's filters, the answers the
proxy gives itself (404 NR, redirects, 500, 429 RL), the rule's timeouts and retries, the consistent-hash key.

The mesh is read from wire items as a proxy reads a config version (`traffic_mesh`); each case checks what a client
or the upstream would see: the status and headers of a reply, the request head as forwarded, the response headers.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshlet_contracts.routes import (
    BackendRef,
    HeaderModifier,
    PathMatch,
    PathModifier,
    RequestRedirect,
    Retry,
    RouteFilter,
    RouteMatch,
    RouteRule,
    URLRewrite,
    ValueMatch,
)
from meshlet_contracts.traffic import ConsistentHash, HttpCookie, LoadBalancer, RateLimit, TrafficPolicy
from tests.unit.ztunnel.traffic_mesh import NS, mesh, policy, request, route, service
from ztunnel.l7.clusters import Clusters
from ztunnel.l7.exchange import Reply, RequestPolicy
from ztunnel.l7.heads import origin_form
from ztunnel.l7.messages import Head, Headers
from ztunnel.l7.plan import DEFAULT_BACKOFF, DEFAULT_RETRIES, Plan, plan, request_policy
from ztunnel.state.mesh import MeshIndex

CLIENT = ("spiffe://cluster.local/ns/shop/sa/client", "10.0.9.9")
OTHER_CLIENT = ("spiffe://cluster.local/ns/shop/sa/other", "10.0.9.8")


def to(name: str, port: int = 80, weight: int = 1, namespace: str = NS) -> BackendRef:
    return BackendRef(name, namespace, port, weight)


def prefix(path: str, **headers: str) -> RouteMatch:
    return RouteMatch(
        PathMatch("PathPrefix", path), tuple(ValueMatch(n.replace("_", "-"), v) for n, v in headers.items())
    )


def ask(index: MeshIndex, head: Head, clusters: Clusters | None = None, source: tuple[str, str] = CLIENT,
        now: float = 0.0, port: int = 80, parent: str = "web", seed: int = 1) -> Plan | Reply:  # fmt: skip
    """The plan for `head` sent to `port` of Service `parent`."""
    clusters = clusters if clusters is not None else Clusters()
    return plan(index, clusters, index.services[f"{NS}/{parent}"], port, head, source, now, random.Random(seed))


def planned(result: Plan | Reply) -> Plan:
    assert isinstance(result, Plan), result
    return result


def replied(result: Plan | Reply) -> Reply:
    assert isinstance(result, Reply), result
    return result


def names(headers: Headers) -> list[tuple[str, str]]:
    return [(n.decode().lower(), v.decode()) for n, v in headers]


SERVICES = [service("web"), service("api", ["10.0.2.1"]), service("canary", ["10.0.3.1"])]


# --- without routes, and rule selection ---------------------------------------------------------------------------


def test_without_routes_the_parent_service_is_the_backend_untouched() -> None:
    index = mesh(SERVICES)
    clusters = Clusters()
    head = request("/a?b=1", X_Trace="t")
    before = list(head.headers)
    result = planned(ask(index, head, clusters))
    assert result.service is index.services["shop/web"]
    assert (result.cluster.service, result.cluster.port) == ("shop/web", 80)
    assert result.cluster is clusters.get(index, "shop/web", 80)
    assert (result.route, result.policy, result.mirrors, result.hash_key, result.response_edit) == (
        "",
        None,
        (),
        None,
        None,
    )
    assert head.headers == before and head.target == "/a?b=1"


@pytest.mark.parametrize(
    ("target", "headers", "backend"),
    [
        ("/api/v1", {}, "api"),
        ("/api", {}, "api"),
        ("/apis", {}, "web"),  # a prefix matches whole path elements: `/apis` is not under `/api`
        ("/", {}, "web"),
        ("/anything", {"x_canary": "true"}, "canary"),
        ("/api/v1", {"x_canary": "true"}, "api"),  # the longer prefix wins over a header match
        ("/anything", {"x_canary": "false"}, "web"),
    ],
)
def test_the_rule_that_matches_best_picks_the_backend(target: str, headers: dict[str, str], backend: str) -> None:
    rules = (
        RouteRule((prefix("/"),), backends=(to("web"),)),
        RouteRule((prefix("/", x_canary="true"),), backends=(to("canary"),)),
        RouteRule((prefix("/api"),), backends=(to("api"),)),
    )
    index = mesh(SERVICES, [route("split", *rules)])
    result = planned(ask(index, request(target, **headers)))
    assert result.service.name == backend and result.cluster.service == f"shop/{backend}"
    assert result.route == "shop/split"


def test_a_route_attached_to_another_port_does_not_route_this_one() -> None:
    services = [service("web", ports=(80, 81)), service("api")]
    index = mesh(services, [route("admin", RouteRule(backends=(to("api"),)), port=81)])
    assert planned(ask(index, request(), port=80)).service.name == "web"
    assert planned(ask(index, request(), port=81)).service.name == "api"


def test_no_matching_rule_is_404_no_route() -> None:
    index = mesh(SERVICES, [route("only-api", RouteRule((prefix("/api"),), backends=(to("api"),)))])
    reply = replied(ask(index, request("/other")))
    assert (reply.status, reply.flags) == (404, "NR")


# --- filters ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redirect", "match", "host", "target", "status", "location"),
    [
        (RequestRedirect(), "/", "web.shop", "/a?x=1", 302, "http://web.shop/a?x=1"),
        (RequestRedirect(hostname="new.example", status_code=301), "/", "web.shop:80", "/a", 301, "http://new.example/a"),
        (RequestRedirect(scheme="https"), "/", "web.shop:80", "/a", 302, "https://web.shop/a"),
        (RequestRedirect(port=8443), "/", "web.shop", "/a", 302, "http://web.shop:8443/a"),
        (RequestRedirect(path=PathModifier("ReplacePrefixMatch", "/new")), "/old", "web", "/old/x?q", 302,
         "http://web/new/x?q"),
        (RequestRedirect(path=PathModifier("ReplaceFullPath", "/moved")), "/", "web", "/a/b", 302, "http://web/moved"),
    ],
)  # fmt: skip
def test_a_redirect_answers_with_its_status_and_location(
    redirect: RequestRedirect, match: str, host: str, target: str, status: int, location: str
) -> None:
    rule = RouteRule((prefix(match),), filters=(RouteFilter("RequestRedirect", redirect),), backends=(to("api"),))
    index = mesh(SERVICES, [route("moved", rule)])
    reply = replied(ask(index, request(target, host=host)))
    assert reply.status == status
    assert reply.headers == ((b"location", location.encode()),)


def test_a_redirect_of_a_request_without_host_names_the_service() -> None:
    rule = RouteRule(filters=(RouteFilter("RequestRedirect", RequestRedirect(port=8080)),), backends=(to("api"),))
    index = mesh(SERVICES, [route("moved", rule)])
    head = Head("1.0", [], method="GET", target="/a")  # HTTP/1.0 does not require a Host
    assert replied(ask(index, head)).headers == ((b"location", b"http://web.shop:8080/a"),)


def test_a_request_header_modifier_changes_the_forwarded_head() -> None:
    modifier = HeaderModifier(set=(("X-Env", "prod"),), add=(("X-Via", "mesh"),), remove=("X-Debug",))
    rule = RouteRule(filters=(RouteFilter("RequestHeaderModifier", modifier),), backends=(to("api"),))
    index = mesh(SERVICES, [route("hdr", rule)])
    head = request(x_env="dev", x_via="client", x_debug="1")
    assert head.get(b"x-env") == b"dev"  # read before the filter: `get` must not answer from a stale view
    planned(ask(index, head))
    assert names(head.headers) == [("host", "web.shop:80"), ("x-via", "client"), ("x-env", "prod"), ("x-via", "mesh")]
    assert head.get(b"x-env") == b"prod"
    assert head.values(b"x-via") == [b"client", b"mesh"]
    assert head.get(b"x-debug") is None


@pytest.mark.parametrize(
    ("rewrite", "target", "forwarded_target", "host"),
    [
        (URLRewrite(hostname="api.internal"), "/shop/a?x=1", "/shop/a?x=1", "api.internal"),
        (URLRewrite(path=PathModifier("ReplacePrefixMatch", "/v2")), "/shop/a?x=1", "/v2/a?x=1", "web.shop:80"),
        (URLRewrite(path=PathModifier("ReplacePrefixMatch", "/")), "/shop/a", "/a", "web.shop:80"),
        (URLRewrite("api.internal", PathModifier("ReplaceFullPath", "/health")), "/shop/x?y", "/health?y",
         "api.internal"),
    ],
)  # fmt: skip
def test_a_url_rewrite_changes_the_target_and_host(
    rewrite: URLRewrite, target: str, forwarded_target: str, host: str
) -> None:
    rule = RouteRule((prefix("/shop"),), filters=(RouteFilter("URLRewrite", rewrite),), backends=(to("api"),))
    index = mesh(SERVICES, [route("rw", rule)])
    head = request(target)
    assert head.get(b"host") == b"web.shop:80"
    planned(ask(index, head))
    assert head.target == forwarded_target
    assert head.get(b"host") == host.encode()
    assert len(head.values(b"host")) == 1


def test_a_response_header_modifier_is_applied_by_the_response_edit() -> None:
    modifier = HeaderModifier(set=(("Cache-Control", "no-store"),), add=(("X-Route", "r"),), remove=("Server",))
    rule = RouteRule(filters=(RouteFilter("ResponseHeaderModifier", modifier),), backends=(to("api"),))
    index = mesh(SERVICES, [route("resp", rule)])
    head = request()
    result = planned(ask(index, head))
    assert names(head.headers) == [("host", "web.shop:80")]  # the request is not touched
    assert result.response_edit is not None
    response = [(b"Server", b"echo"), (b"cache-control", b"max-age=60"), (b"Content-Length", b"2")]
    assert names(result.response_edit(response)) == [
        ("content-length", "2"),
        ("cache-control", "no-store"),
        ("x-route", "r"),
    ]


def test_filters_apply_in_order_and_a_redirect_after_a_header_modifier_sees_its_host() -> None:
    filters = (
        RouteFilter("RequestHeaderModifier", HeaderModifier(set=(("Host", "renamed.example"),))),
        RouteFilter("RequestRedirect", RequestRedirect()),
    )
    index = mesh(SERVICES, [route("r", RouteRule(filters=filters, backends=(to("api"),)))])
    reply = replied(ask(index, request("/p")))
    assert reply.headers == ((b"location", b"http://renamed.example/p"),)


# --- backends -----------------------------------------------------------------------------------------------------


def test_weighted_backends_share_requests_by_weight() -> None:
    rule = RouteRule(backends=(to("web", weight=90), to("canary", weight=10)))
    index = mesh(SERVICES, [route("canary", rule)])
    clusters, rng = Clusters(), random.Random(15)
    counts: Counter[str] = Counter()
    for _ in range(2000):
        result = planned(plan(index, clusters, index.services["shop/web"], 80, request(), CLIENT, 0.0, rng))
        counts[result.service.name] += 1
    assert abs(counts["canary"] / 2000 - 0.10) < 0.03
    assert counts["web"] + counts["canary"] == 2000


def test_a_backend_of_weight_zero_gets_nothing() -> None:
    index = mesh(SERVICES, [route("r", RouteRule(backends=(to("web", weight=0), to("api", weight=1))))])
    assert {planned(ask(index, request(), seed=s)).service.name for s in range(50)} == {"api"}


@pytest.mark.parametrize(
    ("backends", "detail"),
    [
        ((), "no backendRefs"),
        ((to("api", weight=0),), "weight 0"),
        ((to("ghost"),), "Service shop/ghost not found"),
        ((to("api", port=9999),), "no port 9999"),
        ((to("api", namespace="other"),), "another namespace"),
    ],
)
def test_a_rule_without_a_usable_backend_is_500(backends: tuple[BackendRef, ...], detail: str) -> None:
    services = [*SERVICES, service("api", ["10.0.4.1"], namespace="other")]
    index = mesh(services, [route("bad", RouteRule(backends=backends))])
    reply = replied(ask(index, request()))
    assert reply.status == 500
    assert "shop/bad" in reply.detail and detail in reply.detail


def test_a_mirror_is_resolved_to_its_cluster_and_service() -> None:
    services = [*SERVICES, service("shadow", ["10.0.5.1"], ports=(80, 8080))]
    rule = RouteRule(filters=(RouteFilter("RequestMirror", to("shadow", port=8080)),), backends=(to("api"),))
    index = mesh(services, [route("m", rule)])
    clusters = Clusters()
    result = planned(ask(index, request(), clusters))
    assert result.service.name == "api"
    [(cluster, mirror)] = result.mirrors
    assert mirror is index.services["shop/shadow"]
    assert cluster is clusters.get(index, "shop/shadow", 8080)


@pytest.mark.parametrize("mirror", [to("ghost"), to("shadow", port=9999), to("shadow", namespace="other")])
def test_a_mirror_that_does_not_resolve_is_skipped_and_the_request_still_goes(mirror: BackendRef) -> None:
    services = [*SERVICES, service("shadow", ["10.0.5.1"]), service("shadow", ["10.0.6.1"], namespace="other")]
    rule = RouteRule(filters=(RouteFilter("RequestMirror", mirror),), backends=(to("api"),))
    result = planned(ask(mesh(services, [route("m", rule)]), request()))
    assert result.service.name == "api" and result.mirrors == ()


# --- rate limits --------------------------------------------------------------------------------------------------


def limited(index: MeshIndex, clusters: Clusters, count: int, target: str = "/", source: tuple[str, str] = CLIENT,
            now: float = 0.0) -> list[int]:  # fmt: skip
    """The statuses `count` requests would get (200 standing for forwarded)."""
    out = []
    for _ in range(count):
        result = ask(index, request(target), clusters, source, now)
        out.append(result.status if isinstance(result, Reply) else 200)
    return out


def test_a_burst_lets_that_many_through_then_429_with_the_rate_limit_headers() -> None:
    index = mesh(SERVICES, policies=[policy("rl", rate_limit=RateLimit(3, "minute", 3))])
    clusters = Clusters()
    remaining = []
    for _ in range(3):
        edit = planned(ask(index, request(), clusters, now=10.0)).response_edit
        assert edit is not None
        got = dict(names(edit([(b"content-length", b"0")])))
        assert (got["content-length"], got["x-ratelimit-limit"]) == ("0", "3")
        remaining.append(got["x-ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    reply = replied(ask(index, request(), clusters, now=10.0))
    assert (reply.status, reply.flags, reply.body) == (429, "RL", "local_rate_limited")
    assert names(list(reply.headers)) == [
        ("x-ratelimit-limit", "3"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "60"),  # the bucket was made by the first request, at 10 s: it fills at 70 s
    ]
    assert clusters.counts[("rate_limited", "shop", "web", "")] == 1
    assert limited(index, clusters, 1, now=69.9) == [429]
    assert limited(index, clusters, 4, now=70.0) == [200, 200, 200, 429]  # refilled after the unit


def test_per_source_identity_each_client_has_its_own_bucket() -> None:
    per_source = mesh(SERVICES, policies=[policy("rl", rate_limit=RateLimit(1, "minute", 1, True))])
    clusters = Clusters()
    assert limited(per_source, clusters, 2, source=CLIENT) == [200, 429]
    assert limited(per_source, clusters, 2, source=OTHER_CLIENT) == [200, 429]
    shared = mesh(SERVICES, policies=[policy("rl", rate_limit=RateLimit(1, "minute", 1))])
    clusters = Clusters()
    assert limited(shared, clusters, 1, source=CLIENT) == [200]
    assert limited(shared, clusters, 1, source=OTHER_CLIENT) == [429]


@pytest.mark.parametrize("named", ["limited", "shop/limited"])
def test_a_limit_for_one_route_applies_to_that_route_only(named: str) -> None:
    routes = [
        route("limited", RouteRule((prefix("/slow"),), backends=(to("api"),))),
        route("free", RouteRule((prefix("/fast"),), backends=(to("api"),))),
    ]
    index = mesh(SERVICES, routes, [policy("rl", rate_limit=RateLimit(2, "minute", 2, route=named))])
    clusters = Clusters()
    assert limited(index, clusters, 3, "/slow") == [200, 200, 429]
    assert limited(index, clusters, 5, "/fast") == [200] * 5
    without_routes = mesh(SERVICES, policies=[policy("rl", rate_limit=RateLimit(2, "minute", 2, route=named))])
    assert limited(without_routes, Clusters(), 5) == [200] * 5


def test_a_limit_for_a_route_of_the_same_name_in_another_namespace_does_not_apply() -> None:
    """A policy's `route` names an HTTPRoute of the policy's namespace: `other/limited`, attached to shop/web from
    its own namespace (a consumer route), is not it."""
    services = [*SERVICES, service("api", ["10.0.4.1"], namespace="other")]
    consumer = route("limited", RouteRule(backends=(to("api", namespace="other"),)), namespace="other",
                     parent_namespace=NS)  # fmt: skip
    index = mesh(services, [consumer], [policy("rl", rate_limit=RateLimit(1, "minute", 1, route="limited"))])
    assert index.routes_for("shop/web", 80) == (consumer,)
    assert limited(index, Clusters(), 3) == [200] * 3


def test_a_route_to_its_own_parent_takes_one_token_per_request() -> None:
    rules = (RouteRule((prefix("/"),), backends=(to("web"),)),)
    index = mesh(SERVICES, [route("self", *rules)], [policy("rl", rate_limit=RateLimit(2, "minute", 2))])
    assert limited(index, Clusters(), 3) == [200, 200, 429]


def test_the_backends_own_limit_applies_too() -> None:
    index = mesh(
        SERVICES,
        [route("to-api", RouteRule(backends=(to("api"),)))],
        [policy("rl", target="api", rate_limit=RateLimit(2, "minute", 2))],
    )
    clusters = Clusters()
    assert limited(index, clusters, 3) == [200, 200, 429]
    assert clusters.counts[("rate_limited", "shop", "api", "")] == 1


# --- timeouts and retries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (RouteRule(), None),
        (RouteRule(timeout=5.0), RequestPolicy(timeout=5.0, retries=0, backoff=DEFAULT_BACKOFF)),
        (RouteRule(backend_timeout=1.5), RequestPolicy(try_timeout=1.5, retries=0)),
        (RouteRule(retry=Retry()), RequestPolicy(retries=DEFAULT_RETRIES, backoff=DEFAULT_BACKOFF)),
        (RouteRule(retry=Retry(attempts=0, codes=(503,))), RequestPolicy(retries=0, retry_codes=frozenset({503}))),
        (
            RouteRule(timeout=0.0, backend_timeout=2.0, retry=Retry(3, (502, 503), 0.1)),
            RequestPolicy(timeout=None, try_timeout=2.0, retries=3, retry_codes=frozenset({502, 503}), backoff=0.1),
        ),
        (RouteRule(timeout=0.0), None),  # 0 is no timeout: nothing to enforce
    ],
)
def test_a_rules_timeouts_and_retry_become_the_request_policy(rule: RouteRule, expected: RequestPolicy | None) -> None:
    assert DEFAULT_RETRIES == 2
    assert request_policy(rule) == expected
    assert request_policy(rule) == expected  # the same from the cache


def test_the_plan_carries_the_chosen_rules_policy() -> None:
    rules = (
        RouteRule((prefix("/slow"),), backends=(to("api"),), timeout=9.0, retry=Retry(1, (503,))),
        RouteRule((prefix("/"),), backends=(to("api"),)),
    )
    index = mesh(SERVICES, [route("r", *rules)])
    assert planned(ask(index, request("/slow"))).policy == RequestPolicy(9.0, None, 1, frozenset({503}))
    assert planned(ask(index, request("/"))).policy is None


# --- consistent hashing -------------------------------------------------------------------------------------------


def hashing(**key: object) -> TrafficPolicy:
    return policy("lb", target="web", load_balancer=LoadBalancer(consistent_hash=ConsistentHash(**key)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lb", "headers", "key"),
    [
        (hashing(http_header_name="x-user"), {"x_user": "alice"}, "alice"),
        (hashing(http_header_name="x-user"), {}, None),
        (hashing(http_cookie=HttpCookie("session")), {"cookie": "a=1; session=s42; b=2"}, "s42"),
        (hashing(http_cookie=HttpCookie("session")), {"cookie": "a=1"}, None),  # no ttl: none is made
        (hashing(use_source_ip=True), {}, CLIENT[1]),
    ],
)
def test_the_hash_key_comes_from_the_policys_source(
    lb: TrafficPolicy, headers: dict[str, str], key: str | None
) -> None:
    result = planned(ask(mesh(SERVICES, policies=[lb]), request(**headers)))
    assert result.hash_key == key
    assert result.response_edit is None  # no cookie to set


def test_a_ttl_cookie_policy_gives_a_client_without_the_cookie_one_and_keeps_it_on_one_endpoint() -> None:
    lb = hashing(http_cookie=HttpCookie("session", "/", 3600.0))
    many = service("web", [f"10.0.1.{i}" for i in range(1, 9)])
    index = mesh([many], policies=[lb])
    clusters = Clusters()
    first = planned(ask(index, request(), clusters))
    assert isinstance(first.hash_key, str) and first.hash_key
    assert first.response_edit is not None
    [(name, cookie)] = names(first.response_edit([]))
    assert name == "set-cookie"
    assert cookie == f"session={first.hash_key}; Path=/; Max-Age=3600; HttpOnly"
    endpoints = first.cluster.candidates(first.service)
    chosen = {first.cluster.choose(endpoints, 0.0, first.hash_key).ip}  # type: ignore[union-attr]
    for _ in range(10):  # the client sends the cookie back: the same key, the same endpoint, no new cookie
        again = planned(ask(index, request(cookie=f"session={first.hash_key}"), clusters))
        assert again.hash_key == first.hash_key and again.response_edit is None
        chosen.add(again.cluster.choose(endpoints, 0.0, again.hash_key).ip)  # type: ignore[union-attr]
    assert len(chosen) == 1
    other = planned(ask(index, request(), clusters))
    assert other.hash_key != first.hash_key  # each new client its own


def test_the_backends_policy_decides_the_hash_not_the_parents() -> None:
    index = mesh(
        SERVICES,
        [route("to-api", RouteRule(backends=(to("api"),)))],
        [hashing(http_header_name="x-user"), policy("api-lb", target="api", load_balancer=LoadBalancer("RANDOM"))],
    )
    assert planned(ask(index, request(x_user="alice"))).hash_key is None


@pytest.mark.parametrize(
    ("target", "host", "path", "new_host"),
    [
        ("http://web.shop/a?b=1", "ignored", "/a?b=1", "web.shop"),
        ("http://web.shop:80", "x", "/", "web.shop:80"),
        ("HTTP://web.shop?q", "x", "/?q", "web.shop"),
        ("/plain", "web", "/plain", "web"),
    ],
)
def test_an_absolute_form_target_is_routed_by_its_path_and_forwarded_in_origin_form(
    target: str, host: str, path: str, new_host: str
) -> None:
    head = Head("1.1", [(b"Host", host.encode())], method="GET", target=target)
    origin_form(head)
    assert (head.target, head.get(b"host")) == (path, new_host.encode())
