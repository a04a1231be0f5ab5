"""HTTPRoute wire form: what control sends reads back equal, and anything unexpected is refused naming where."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from meshlet_contracts.routes import (
    BackendRef,
    Condition,
    HeaderModifier,
    HTTPRoute,
    ParentRef,
    ParentStatus,
    PathMatch,
    PathModifier,
    RequestRedirect,
    Retry,
    RouteError,
    RouteFilter,
    RouteMatch,
    RouteRule,
    URLRewrite,
    ValueMatch,
)
from meshlet_contracts.wire import COLLECTIONS, item_key

FULL = HTTPRoute(
    name="reviews",
    namespace="shop",
    parents=(ParentRef("reviews", "shop", 9080), ParentRef("ratings", "shop")),
    rules=(
        RouteRule(
            matches=(
                RouteMatch(
                    PathMatch("PathPrefix", "/api"),
                    headers=(ValueMatch("x-canary", "yes"), ValueMatch("user", "j.*", "RegularExpression")),
                    query_params=(ValueMatch("v", "2"),),
                    method="GET",
                ),
            ),
            filters=(
                RouteFilter("RequestHeaderModifier", HeaderModifier(set=(("x-a", "1"),), add=(("x-b", "2"),))),
                RouteFilter("ResponseHeaderModifier", HeaderModifier(remove=("server",))),
                RouteFilter("URLRewrite", URLRewrite("new.host", PathModifier("ReplacePrefixMatch", "/v2"))),
                RouteFilter("RequestMirror", BackendRef("shadow", "shop", 9080)),
            ),
            backends=(BackendRef("reviews-v1", "shop", 9080, 90), BackendRef("reviews-v2", "shop", 9080, 10)),
            timeout=10.0,
            backend_timeout=2.5,
            retry=Retry(3, (502, 503), 0.1),
            name="api",
        ),
        RouteRule(
            matches=(RouteMatch(PathMatch("Exact", "/old")),),
            filters=(RouteFilter("RequestRedirect", RequestRedirect("https", "x.y", None, 8443, 301)),),
        ),
    ),
    created="2026-11-28T10:00:00Z",
    status=(
        ParentStatus(
            ParentRef("reviews", "shop", 9080),
            (Condition("Accepted", "True", "Accepted"), Condition("ResolvedRefs", "True", "ResolvedRefs")),
        ),
    ),
)


def test_full_route_round_trips_through_json() -> None:
    wire = json.loads(json.dumps(FULL.to_wire()))
    assert HTTPRoute.from_wire(wire) == FULL
    assert item_key("http_routes", wire) == "shop/reviews" and "http_routes" in COLLECTIONS


def test_minimal_item_reads_defaults() -> None:
    route = HTTPRoute.from_wire({"name": "r", "namespace": "ns", "rules": [{}]})
    assert route.rules == (RouteRule(),)
    assert route.rules[0].matches == (RouteMatch(PathMatch("PathPrefix", "/")),)
    assert route.parents == () and route.created == ""


def test_accepted_parents_are_those_with_accepted_true() -> None:
    assert FULL.accepted_parents() == (ParentRef("reviews", "shop", 9080),)


def mutated(path: list[Any], value: Any) -> dict[str, Any]:
    wire: dict[str, Any] = copy.deepcopy(FULL.to_wire())  # type: ignore[arg-type]
    target: Any = wire
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return wire


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["rules", 0, "matches", 0, "path", "type"], "Prefix", "rules[0].matches[0].path.type: expected one of"),
        (["rules", 0, "matches", 0, "headers", 0, "type"], "Regex", "rules[0].matches[0].headers[0].type"),
        (["rules", 0, "matches", 0, "method"], "", "rules[0].matches[0].method"),
        (["rules", 0, "backendRefs", 1, "weight"], -1, "rules[0].backendRefs[1].weight"),
        (["rules", 0, "backendRefs", 1, "port"], 0, "rules[0].backendRefs[1].port"),
        (["rules", 0, "filters", 0, "type"], "ExtensionRef", "rules[0].filters[0].type"),
        (["rules", 0, "filters", 3, "requestMirror", "backendRef", "name"], "", "requestMirror.backendRef.name"),
        (["rules", 0, "timeouts", "request"], "10s", "rules[0].timeouts.request: expected seconds"),
        (["rules", 0, "retry", "codes", 0], 200, "rules[0].retry.codes[0]"),
        (["rules", 1, "filters", 0, "requestRedirect", "statusCode"], 304, "requestRedirect.statusCode"),
        (["status", 0, "conditions", 0, "status"], "Unknown", "status[0].conditions[0].status"),
        (["parentRefs", 0, "sectionName"], "http", "parentRefs[0].sectionName: unknown field"),
        (["rules", 0, "matches", 0, "hostnames"], [], "rules[0].matches[0].hostnames: unknown field"),
    ],
)
def test_strict_reader_names_route_and_field(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(RouteError) as info:
        HTTPRoute.from_wire(mutated(path, value))
    assert str(info.value).startswith("HTTPRoute shop/reviews: ")
    assert message in str(info.value)


def test_filter_with_settings_of_another_type_is_refused() -> None:
    wire = mutated(["rules", 0, "filters", 0, "type"], "URLRewrite")
    with pytest.raises(RouteError, match=r"filters\[0\].requestHeaderModifier: unknown field"):
        HTTPRoute.from_wire(wire)


def test_missing_name_is_reported_with_what_is_known() -> None:
    with pytest.raises(RouteError, match=r"HTTPRoute shop/\?: name"):
        HTTPRoute.from_wire({"namespace": "shop", "rules": []})
