"""Routing decisions: the Gateway API's match precedence, weighted backends, and what filters do to a request.

The precedence cases restate the spec's HTTPRouteRule `matches` text: Exact path over the longest PathPrefix, then a
method, then more headers, then more query parameters; ties go to the oldest route, then to `namespace/name`, then to
the first rule. PathPrefix matches whole path elements and ignores a trailing slash of the prefix.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshlet_contracts.routes import (
    BackendRef,
    HeaderModifier,
    HTTPRoute,
    ParentRef,
    PathMatch,
    PathModifier,
    RequestRedirect,
    RouteMatch,
    RouteRule,
    URLRewrite,
    ValueMatch,
)
from ztunnel.l7.routing import (
    INVALID_BACKEND,
    NO_ENDPOINTS,
    NO_ROUTE,
    BackendError,
    Match,
    NoRoute,
    invalid_backend,
    modify_headers,
    path_matches,
    pick_backend,
    redirect_location,
    rewrite_path,
    rewrite_request,
    select,
)


def rule(name: str, *matches: RouteMatch) -> RouteRule:
    return RouteRule(matches=matches or (RouteMatch(),), backends=(BackendRef(name, "shop", 80),))


def http_route(name: str, *rules: RouteRule, created: str = "2026-01-01T00:00:00Z", ns: str = "shop") -> HTTPRoute:
    return HTTPRoute(name, ns, (ParentRef("web", "shop"),), rules, created)


def prefix(value: str, **kw: object) -> RouteMatch:
    return RouteMatch(PathMatch("PathPrefix", value), **kw)  # type: ignore[arg-type]


def winner(routes: list[HTTPRoute], path: str, method: str = "GET", headers: dict[str, str] | None = None,
           query: str = "") -> str:  # fmt: skip
    found = select(routes, method, path, [(k.encode(), v.encode()) for k, v in (headers or {}).items()], query)
    assert isinstance(found, Match), found
    return found.rule.backends[0].name


@pytest.mark.parametrize(
    ("prefix_value", "path", "expected"),
    [
        ("/abc", "/abc", True),
        ("/abc", "/abc/", True),
        ("/abc", "/abc/def", True),
        ("/abc", "/abcd", False),
        ("/abc/", "/abc", True),  # the trailing slash of a prefix is ignored
        ("/", "/anything", True),
        ("/abc", "/ab", False),
    ],
)
def test_path_prefix_matches_whole_elements(prefix_value: str, path: str, expected: bool) -> None:
    assert path_matches(PathMatch("PathPrefix", prefix_value), path) is expected


def test_exact_and_regex_paths() -> None:
    assert path_matches(PathMatch("Exact", "/a"), "/a") and not path_matches(PathMatch("Exact", "/a"), "/a/")
    assert path_matches(PathMatch("RegularExpression", "/u/[0-9]+"), "/u/42")
    assert not path_matches(PathMatch("RegularExpression", "/u/[0-9]+"), "/u/42/x")  # the whole path must match


def test_precedence_within_one_route_ranks_matches_not_rule_order() -> None:
    r = http_route(
        "r",
        rule("catch-all", prefix("/")),
        rule("regex", RouteMatch(PathMatch("RegularExpression", "/api/.*"))),
        rule("short", prefix("/api")),
        rule("long", prefix("/api/v1")),
        rule("exact", RouteMatch(PathMatch("Exact", "/api/v1/users"))),
    )
    assert winner([r], "/api/v1/users") == "exact"
    assert winner([r], "/api/v1/items") == "long"
    assert winner([r], "/api/v2") == "short"
    assert winner([r], "/other") == "catch-all"


def test_precedence_method_then_headers_then_query_params() -> None:
    r = http_route(
        "r",
        rule("query2", prefix("/a", query_params=(ValueMatch("x", "1"), ValueMatch("y", "2")))),
        rule("header1", prefix("/a", headers=(ValueMatch("h1", "1"),))),
        rule("header2", prefix("/a", headers=(ValueMatch("h1", "1"), ValueMatch("H2", "2")))),
        rule("method", prefix("/a", method="POST")),
    )
    both = {"h1": "1", "h2": "2"}
    assert winner([r], "/a", "POST", both, "x=1&y=2") == "method"
    assert winner([r], "/a", "GET", both, "x=1&y=2") == "header2"
    assert winner([r], "/a", "GET", {"h1": "1"}, "x=1&y=2") == "header1"
    assert winner([r], "/a", "GET", {}, "y=2&x=1") == "query2"
    assert isinstance(select([r], "GET", "/a", [], ""), NoRoute)


def test_ties_go_to_oldest_route_then_name_then_first_rule() -> None:
    old = http_route("zeta", rule("zeta"), created="2025-01-01T00:00:00Z")
    new = http_route("alpha", rule("alpha"), created="2026-01-01T00:00:00Z")
    unknown = http_route("aaa", rule("aaa"), created="")
    assert winner([new, unknown, old], "/x") == "zeta"
    assert winner([http_route("b", rule("b")), http_route("a", rule("a"))], "/x") == "a"
    assert winner([http_route("b", rule("b"), ns="a"), http_route("a", rule("a"), ns="b")], "/x") == "b"
    assert winner([unknown, http_route("b", rule("b"))], "/x") == "b"  # no timestamp counts as newest
    assert winner([http_route("r", rule("first"), rule("second"))], "/x") == "first"
    # Precedence across routes comes before age: a longer prefix in a newer route wins.
    longer = http_route("new", rule("longer", prefix("/x")), created="2027-01-01T00:00:00Z")
    assert winner([old, longer], "/x/y") == "longer"


def test_header_names_fold_case_query_names_do_not_and_first_entry_wins() -> None:
    r = http_route("r", rule("h", prefix("/", headers=(ValueMatch("X-Env", "prod"), ValueMatch("x-env", "dev")))))
    assert winner([r], "/", headers={"x-ENV": "prod"}) == "h"  # only the first x-env entry counts
    q = http_route("q", rule("q", prefix("/", query_params=(ValueMatch("Env", "prod"),))))
    assert isinstance(select([q], "GET", "/", [], "env=prod"), NoRoute)
    assert winner([q], "/", query="Env=prod&Env=dev") == "q"  # a repeated parameter: the first value
    regex = http_route("re", rule("re", prefix("/", headers=(ValueMatch("v", "1\\.[0-9]+", "RegularExpression"),))))
    assert winner([regex], "/", headers={"v": "1.25"}) == "re"
    assert isinstance(select([regex], "GET", "/", [(b"v", b"1.25-beta")], ""), NoRoute)


def test_no_route_is_404_and_outcome_constants_follow_the_spec() -> None:
    assert select([], "GET", "/", [], "") == NoRoute(404, NoRoute().reason)
    assert (NO_ROUTE, INVALID_BACKEND, NO_ENDPOINTS) == (404, 500, 503)


def test_weighted_backends_follow_their_weights() -> None:
    r = RouteRule(
        backends=(BackendRef("v1", "shop", 80, 90), BackendRef("v2", "shop", 80, 10), BackendRef("off", "shop", 80, 0))
    )
    rng = random.Random(15)
    picks = Counter(pick_backend(r, rng).name for _ in range(10_000))  # type: ignore[union-attr]
    assert picks["off"] == 0
    assert 8_800 <= picks["v1"] <= 9_200 and picks["v1"] + picks["v2"] == 10_000


def test_no_backend_or_all_zero_weights_is_a_500() -> None:
    assert pick_backend(RouteRule(), random.Random(1)) == BackendError(500, "the rule has no backendRefs")
    zero = RouteRule(backends=(BackendRef("a", "shop", 80, 0),))
    assert pick_backend(zero, random.Random(1)) == BackendError(500, "every backendRef has weight 0")


def test_invalid_backend_reasons() -> None:
    r = http_route("r")
    assert invalid_backend(r, BackendRef("a", "shop", 80), (80,)) is None
    assert "no port 81" in (invalid_backend(r, BackendRef("a", "shop", 81), (80,)) or "")
    assert "not found" in (invalid_backend(r, BackendRef("b", "shop", 80), None) or "")
    assert "another namespace" in (invalid_backend(r, BackendRef("a", "prod", 80), (80,)) or "")


def test_header_modifier_sets_adds_and_removes_case_insensitively() -> None:
    headers = [(b"Host", b"web"), (b"X-A", b"old"), (b"x-a", b"older"), (b"Server", b"s"), (b"keep", b"1")]
    mod = HeaderModifier(set=(("x-a", "new"),), add=(("X-B", "1"), ("keep", "2")), remove=("SERVER",))
    assert modify_headers(headers, mod) == [
        (b"Host", b"web"), (b"keep", b"1"), (b"x-a", b"new"), (b"X-B", b"1"), (b"keep", b"2")
    ]  # fmt: skip
    assert headers[1] == (b"X-A", b"old")  # the input is left alone


# The spec's ReplacePrefixMatch table (HTTPPathModifier): matched prefix, request path, replacement, result.
@pytest.mark.parametrize(
    ("matched", "path", "replacement", "result"),
    [
        ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
        ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
        ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz"),
        ("/foo", "/foo/", "/xyz", "/xyz/"),
        ("/foo", "/foo/bar", "", "/bar"),
        ("/foo/", "/foo/", "", "/"),
        ("/foo", "/foo/", "", "/"),
        ("/foo/", "/foo/", "/", "/"),
        ("/foo", "/foo/", "/", "/"),
        ("/foo", "/foo", "/", "/"),
    ],
)
def test_replace_prefix_match(matched: str, path: str, replacement: str, result: str) -> None:
    assert (
        rewrite_path(path, PathMatch("PathPrefix", matched), PathModifier("ReplacePrefixMatch", replacement)) == result
    )


def test_url_rewrite_keeps_query_and_replaces_host() -> None:
    matched = prefix("/api")
    rewrite = URLRewrite("backend.local", PathModifier("ReplacePrefixMatch", "/v2"))
    target, headers = rewrite_request("/api/users?id=1", [(b"Host", b"web"), (b"a", b"b")], matched, rewrite)
    assert target == "/v2/users?id=1" and headers == [(b"a", b"b"), (b"host", b"backend.local")]
    full = URLRewrite(None, PathModifier("ReplaceFullPath", "/fixed"))
    assert rewrite_request("/api/x", [(b"Host", b"web")], matched, full) == ("/fixed", [(b"Host", b"web")])


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (RequestRedirect(), "http://web.shop:8080/api/x?q=1"),  # unset parts keep the request's (port: the Service's)
        (RequestRedirect(scheme="https"), "https://web.shop/api/x?q=1"),  # the scheme's well-known port, left out
        (RequestRedirect(scheme="https", port=8443), "https://web.shop:8443/api/x?q=1"),
        (RequestRedirect(hostname="other", port=80), "http://other/api/x?q=1"),
        (RequestRedirect(path=PathModifier("ReplacePrefixMatch", "/v2")), "http://web.shop:8080/v2/x?q=1"),
        (
            RequestRedirect(path=PathModifier("ReplaceFullPath", "/moved"), status_code=301),
            "http://web.shop:8080/moved?q=1",
        ),
    ],
)
def test_redirect_location(redirect: RequestRedirect, expected: str) -> None:
    assert redirect_location(redirect, prefix("/api"), "http", "web.shop:8080", 8080, "/api/x?q=1") == expected


def test_a_backtracking_pattern_matches_in_linear_time() -> None:
    # `(a+)+$` makes a backtracking engine try 2^n ways on a long path of a's ending otherwise: with RE2 the
    # answer comes at once (pytest's timeout would end a backtracking run long before it finished).
    match = PathMatch("RegularExpression", "/(a+)+$")
    assert not path_matches(match, "/" + "a" * 50_000 + "b")
    assert path_matches(match, "/aaa")
