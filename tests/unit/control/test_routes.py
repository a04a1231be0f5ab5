"""HTTPRoute in control: Gateway API mesh routes convert, bad ones name the field, status follows the Services."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from control.model.fields import ValidationError
from control.model.kube import Service, ServicePort
from control.model.mesh import MeshSettings
from control.model.routes import HTTPRoute, route_status
from control.sources.base import SourceBatch
from control.store import ConfigStore
from meshlet_contracts.routes import BackendRef, HeaderModifier, ParentRef, PathMatch, PathModifier, Retry, URLRewrite


def route(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": "shop", **meta},
        "spec": spec,
    }


PARENT = {"group": "", "kind": "Service", "name": "reviews", "port": 9080}
CANARY: dict[str, Any] = {
    "parentRefs": [PARENT],
    "rules": [
        {
            "matches": [
                {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-user", "value": "j"}]}
            ],
            "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}},
                {
                    "type": "URLRewrite",
                    "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}},
                },
            ],
            "backendRefs": [
                {"name": "reviews-v1", "port": 9080, "weight": 90},
                {"name": "reviews-v2", "port": 9080, "weight": 10},
            ],
            "timeouts": {"request": "1m30s", "backendRequest": "500ms"},
            "retry": {"attempts": 3, "codes": [503], "backoff": "100ms"},
        },
        {"backendRefs": [{"name": "reviews-v1", "port": 9080}]},
    ],
}


def invalid(obj: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        HTTPRoute.from_k8s(obj)
    return str(info.value)


def test_canary_route_converts() -> None:
    r = HTTPRoute.from_k8s(route(CANARY, creationTimestamp="2026-11-28T10:00:00+01:00"))
    assert r.parents == (ParentRef("reviews", "shop", 9080),)
    assert r.created == "2026-11-28T09:00:00Z"
    first, second = r.rules
    assert first.matches[0].path == PathMatch("PathPrefix", "/api")
    assert first.backends == (BackendRef("reviews-v1", "shop", 9080, 90), BackendRef("reviews-v2", "shop", 9080, 10))
    assert first.filters_of("RequestHeaderModifier") == (HeaderModifier(set=(("x-a", "1"),)),)
    assert first.filters_of("URLRewrite") == (URLRewrite(None, PathModifier("ReplacePrefixMatch", "/v2")),)
    assert (first.timeout, first.backend_timeout) == (90.0, 0.5)
    assert first.retry == Retry(3, (503,), 0.1)
    assert second.matches[0].path == PathMatch("PathPrefix", "/")  # the default match: every request


def edited(path: list[Any], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(CANARY)
    target: Any = spec
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return route(spec)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["parentRefs"], [], "spec.parentRefs: required"),
        (["parentRefs", 0, "kind"], "Gateway", "spec.parentRefs[0].kind: meshlet routes mesh traffic only"),
        (["parentRefs", 0], {"name": "reviews"}, "spec.parentRefs[0].group"),  # the default parent is a Gateway
        (["parentRefs", 0], {"group": "", "name": "reviews"}, "got group '' kind 'Gateway'"),
        (["parentRefs"], [PARENT, PARENT], "spec.parentRefs[1]: Service shop/reviews port 9080 is listed twice"),
        (["parentRefs", 0, "prot"], 1, "spec.parentRefs[0].prot: unknown field 'prot'; did you mean 'port'?"),
        (["rules", 0, "matches", 0, "path", "type"], "Prefix", "spec.rules[0].matches[0].path.type: unknown path type"),
        (["rules", 0, "matches", 0, "path", "value"], "api", "spec.rules[0].matches[0].path.value"),
        (["rules", 0, "matches", 0, "path"], {"type": "RegularExpression", "value": "(("}, "path.value"),
        # RE2, as Envoy: no backreferences or lookaround (they need backtracking), named as RE2 says.
        (["rules", 0, "matches", 0, "path"], {"type": "RegularExpression", "value": "/(a)\\1"}, "RE2 takes"),
        (["rules", 0, "matches", 0, "path"], {"type": "RegularExpression", "value": "/(?=a)"}, "perl operator"),
        (["rules", 0, "matches", 0, "method"], "FETCH", "spec.rules[0].matches[0].method: unknown method"),
        (["rules", 0, "matches", 0, "headers", 0, "name"], "bad name", "headers[0].name"),
        (["rules", 0, "backendRefs", 0, "port"], None, "spec.rules[0].backendRefs[0].port: required"),
        (["rules", 0, "backendRefs", 1, "weight"], 1_000_001, "spec.rules[0].backendRefs[1].weight"),
        (["rules", 0, "timeouts", "request"], "90", "spec.rules[0].timeouts.request: '90' is not a duration"),
        (["rules", 0, "timeouts", "backendRequest"], "2m", "timeouts.backendRequest: must not be longer"),
        (["rules", 0, "retry", "codes"], [200], "spec.rules[0].retry.codes[0]"),
        (["rules", 0, "retry", "attempts"], 11, "spec.rules[0].retry.attempts: at most 10 retries"),
        (["rules", 0, "filters", 0, "type"], "ExtensionRef", "spec.rules[0].filters[0].type: filter ExtensionRef"),
        (["rules", 0, "filters", 0, "requestHeaderModifier", "set", 0, "value"], "a\r\nb", "set[0].value"),
        (["rules", 0, "matches", 0, "path", "type"], "Exact", "ReplacePrefixMatch needs the rule to have exactly one"),
        (["rules", 0, "filters", 0], {"type": "RequestRedirect", "requestRedirect": {}}, "cannot be used together"),
        (["rules", 0, "filters", 0], {"type": "RequestRedirect", "requestRedirect": {"statusCode": 304}}, "statusCode"),
        (["rules", 0, "sessionPersistence"], {}, "spec.rules[0].sessionPersistence: unknown field"),
    ],
)
def test_invalid_route_names_the_field(path: list[Any], value: Any, message: str) -> None:
    assert message in invalid(edited(path, value))


def service(name: str, *ports: int, ns: str = "shop") -> Service:
    return Service(name, ns, ("10.96.0.1",), tuple(ServicePort("", p, p, "TCP") for p in ports), None)


def conditions(r: HTTPRoute, services: list[Service]) -> list[tuple[str, str, str, str]]:
    by_key = {f"{s.namespace}/{s.name}": s for s in services}
    return [(s.parent.name, c.type, c.status, c.reason) for s in route_status(r, by_key) for c in s.conditions]


def test_status_accepted_and_resolved_when_everything_exists() -> None:
    r = HTTPRoute.from_k8s(route(CANARY))
    found = conditions(r, [service("reviews", 9080), service("reviews-v1", 9080), service("reviews-v2", 9080)])
    assert found == [("reviews", "Accepted", "True", "Accepted"), ("reviews", "ResolvedRefs", "True", "ResolvedRefs")]


def test_status_missing_parent_or_port_is_not_accepted() -> None:
    r = HTTPRoute.from_k8s(route(CANARY))
    backends = [service("reviews-v1", 9080), service("reviews-v2", 9080)]
    assert conditions(r, backends)[0] == ("reviews", "Accepted", "False", "NoMatchingParent")
    assert conditions(r, [*backends, service("reviews", 80)])[0] == ("reviews", "Accepted", "False", "NoMatchingParent")


def test_status_backend_not_found_and_cross_namespace_not_permitted() -> None:
    r = HTTPRoute.from_k8s(route(CANARY))
    assert conditions(r, [service("reviews", 9080), service("reviews-v1", 9080)])[1][3] == "BackendNotFound"
    assert conditions(r, [service("reviews", 9080), service("reviews-v1", 80), service("reviews-v2", 9080)])[1] == (
        "reviews", "ResolvedRefs", "False", "BackendNotFound"
    )  # fmt: skip
    other = edited(["rules", 0, "backendRefs", 0, "namespace"], "prod")
    everything = [service("reviews", 9080), service("reviews-v1", 9080, ns="prod"), service("reviews-v2", 9080)]
    assert conditions(HTTPRoute.from_k8s(other), everything)[1][3] == "RefNotPermitted"


def test_store_sends_routes_with_status_and_keeps_the_last_good_version() -> None:
    store = ConfigStore(MeshSettings())
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "shop"},
           "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 9080}]}}  # fmt: skip
    store.apply([SourceBatch("r.yaml", (route(CANARY),))])
    [item] = store.state["http_routes"].values()
    assert item["status"][0]["conditions"][0]["reason"] == "NoMatchingParent"
    store.apply([SourceBatch("s.yaml", (svc,))])
    [item] = store.state["http_routes"].values()
    assert item["status"][0]["conditions"][0]["status"] == "True"  # the Service arrived: re-evaluated
    store.apply([SourceBatch("r.yaml", (edited(["rules", 0, "matches", 0, "method"], "FETCH"),))])
    assert store.state["http_routes"]["shop/reviews"] == item
    [err] = store.all_errors()
    assert (err.origin, err.object) == ("r.yaml", "HTTPRoute shop/reviews") and "method" in err.reason


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_every_redirect_code_of_the_gateway_api_is_taken(code: int) -> None:
    # The conformance suite's mesh redirects use 303, 307 and 308 too (its "additional redirect" feature).
    doc = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "moved", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
            "rules": [
                {
                    "name": "old-prefix",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
                    "filters": [
                        {
                            "type": "RequestRedirect",
                            "requestRedirect": {
                                "statusCode": code,
                                "hostname": "example.org",
                                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                            },
                        }
                    ],
                }
            ],
        },
    }
    redirect = HTTPRoute.from_k8s(doc).rules[0].filters[0].settings
    assert getattr(redirect, "status_code", None) == code
