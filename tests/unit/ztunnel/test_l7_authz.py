"""Authorization per HTTP request and at connect time, with Istio's semantics, by table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from meshlet_contracts.policy import Action, AuthorizationPolicy, Condition, Operation, Rule, Source
from ztunnel.l7.authz import Request, authorize_connection, authorize_request, has_http_rules
from ztunnel.rbac import Connection

ROOT = "istio-system"
ROOTS = (ROOT,)
NS = "app"
LABELS = {"app": "web"}
CLIENT = "spiffe://cluster.local/ns/client/sa/sleep"
CONN = Connection("10.0.0.5", CLIENT, "10.0.1.7", 8080)
PLAINTEXT = Connection("10.0.0.5", None, "10.0.1.7", 8080)


def policy(action: Action, *rules: Rule, name: str = "p") -> AuthorizationPolicy:
    return AuthorizationPolicy(name, NS, None, action, rules)


def to(**fields: Any) -> Rule:
    return Rule(operations=(Operation(**fields),))


def when(key: str, values: tuple[str, ...] = (), not_values: tuple[str, ...] = ()) -> Rule:
    return Rule(conditions=(Condition(key, values, not_values),))


def request(
    method: str = "GET", path: str = "/", host: str = "web.app", headers: Mapping[str, tuple[str, ...]] | None = None
) -> Request:
    return Request(method, path, host, headers or {})


def allowed(policies: list[AuthorizationPolicy], req: Request, conn: Connection = CONN) -> bool:
    return authorize_request(policies, NS, LABELS, conn, req, ROOTS).allowed


# Each row: an ALLOW rule, a request, whether the rule matches it (so the request is allowed).
ALLOW_CASES = [
    # hosts: case-insensitive, compared with the Host header as sent, port included.
    (to(hosts=("web.app",)), request(host="WEB.App"), True),
    (to(hosts=("web.app",)), request(host="web.app:8080"), False),
    (to(hosts=("web.app", "web.app:*")), request(host="web.app:8080"), True),
    (to(hosts=("*.app",)), request(host="web.app"), True),
    (to(hosts=("*.app",)), request(host="web.other"), False),
    (to(hosts=("*",)), request(host=""), False),
    (to(not_hosts=("evil.*",)), request(host="Evil.example"), False),
    (to(not_hosts=("evil.*",)), request(host="web.app"), True),
    # methods: exact and case-sensitive.
    (to(methods=("GET", "HEAD")), request(method="HEAD"), True),
    (to(methods=("GET",)), request(method="get"), False),
    (to(not_methods=("DELETE",)), request(method="DELETE"), False),
    (to(not_methods=("DELETE",)), request(method="POST"), True),
    # paths: on the normalized path, without the query.
    (to(paths=("/info*",)), request(path="/info/x?y=1"), True),
    (to(paths=("/public/*",)), request(path="/public/../admin"), False),
    (to(paths=("/admin",)), request(path="/public/../admin"), True),
    (to(paths=("/api/{*}/items",)), request(path="/api/7/items"), True),
    (to(paths=("/api/{*}/items",)), request(path="/api/7/8/items"), False),
    (to(paths=("/api/{**}",)), request(path="/api/7/8/items"), True),
    (to(not_paths=("/admin*",)), request(path="/admin/x"), False),
    (to(not_paths=("/admin*",)), request(path="/%61dmin/x"), False),
    (to(not_paths=("/admin*",)), request(path="/home"), True),
    # A path that cannot be normalized matches no ALLOW rule with paths, not even notPaths.
    (to(paths=("*",)), request(path="/%zz"), False),
    (to(not_paths=("/admin*",)), request(path="/%zz"), False),
    (to(methods=("GET",)), request(path="/%zz"), True),  # a rule without paths does not look at it
    # ports and HTTP fields of one operation must all match.
    (to(ports=(8080,), methods=("GET",)), request(), True),
    (to(ports=(9090,), methods=("GET",)), request(), False),
    # request.headers[...]: name case-insensitive, values by Istio's string match.
    (when("request.headers[X-Team]", ("blue",)), request(headers={"x-team": ("blue",)}), True),
    (when("request.headers[x-team]", ("blu*",)), request(headers={"x-team": ("blue",)}), True),
    (when("request.headers[X-Team]", ("Blue",)), request(headers={"x-team": ("blue",)}), False),
    (when("request.headers[X-Team]", ("blue",)), request(), False),
    (when("request.headers[X-Team]", ("*",)), request(headers={"x-team": ("",)}), True),
    (when("request.headers[X-Team]", not_values=("red",)), request(), True),
    # Repeated headers are joined with "," before matching, as Istio's normalization says.
    (when("request.headers[X-Team]", ("blue,red",)), request(headers={"x-team": ("blue", "red")}), True),
    (when("request.headers[X-Team]", ("blue",)), request(headers={"x-team": ("blue", "red")}), False),
    (when("request.headers[X-Team]", ("blue*",)), request(headers={"x-team": ("blue", "red")}), True),
    (when("request.headers[X-Team]", not_values=("*red",)), request(headers={"x-team": ("blue", "red")}), False),
    (when("request.headers[:authority]", ("web.*",)), request(), True),
    # JWT parts and unknown keys cannot be evaluated: they never match in an ALLOW rule.
    (Rule(sources=(Source(request_principals=("*",)),)), request(), False),
    (Rule(sources=(Source(not_request_principals=("x",)),)), request(), False),
    (when("request.auth.principal", ("*",)), request(), False),
    (when("request.auth.claims[iss]", not_values=("x",)), request(), False),
    (when("experimental.envoy.filters.a[b]", ("c",)), request(), False),
    # No SNI on plaintext HTTP: values never match.
    (when("connection.sni", ("web.app",)), request(), False),
    # L4 parts still count.
    (Rule(sources=(Source(namespaces=("client",)),), operations=(Operation(methods=("GET",)),)), request(), True),
    (Rule(sources=(Source(namespaces=("other",)),), operations=(Operation(methods=("GET",)),)), request(), False),
    (when("source.ip", ("10.0.0.0/24",)), request(), True),
    (when("destination.port", ("9090",)), request(), False),
]


@pytest.mark.parametrize(("rule", "req", "expected"), ALLOW_CASES)
def test_allow_rule_matches_request(rule: Rule, req: Request, expected: bool) -> None:
    decision = authorize_request([policy("ALLOW", rule)], NS, LABELS, CONN, req, ROOTS)
    assert decision.allowed is expected
    assert decision.reason == (
        "allowed by ALLOW policy app/p" if expected else "no ALLOW policy matched (app/p select this workload)"
    )


# Each row: a DENY rule, a request, whether it is denied.
DENY_CASES = [
    (to(methods=("DELETE",)), request(method="DELETE"), True),
    (to(methods=("DELETE",)), request(method="GET"), False),
    (to(paths=("/admin*",)), request(path="/x/../admin/users"), True),
    (to(paths=("/admin*",)), request(path="/%2e%2e/admin"), True),
    (to(paths=("/admin*",)), request(path="/public"), False),
    # BASE keeps %2F encoded: /admin%2Fx is not under /admin/ (Istio's documented BASE behaviour).
    (to(paths=("/admin/*",)), request(path="/admin%2Fx"), False),
    # An unnormalizable path matches every DENY rule's paths and notPaths: fail closed.
    (to(paths=("/admin*",)), request(path="/%zz"), True),
    (to(not_paths=("/public*",)), request(path="/%00"), True),
    (to(not_paths=("/public*",)), request(path="/public/x"), False),
    (to(hosts=("web.app:*",), methods=("POST",)), request(method="POST", host="web.app:80"), True),
    (when("request.headers[x-debug]", ("*",)), request(headers={"x-debug": ("1",)}), True),
    (when("request.headers[x-debug]", ("*",)), request(), False),
    # JWT parts and unknown keys cannot be evaluated: in a DENY rule they count as matching.
    (Rule(sources=(Source(not_request_principals=("*",)),)), request(), True),
    (Rule(sources=(Source(namespaces=("other",), request_principals=("*",)),)), request(), False),
    (when("request.auth.claims[groups]", ("admin",)), request(), True),
    (when("experimental.envoy.filters.a[b]", ("c",)), request(), True),
    (when("connection.sni", ("web.app",)), request(), False),
]


@pytest.mark.parametrize(("rule", "req", "expected"), DENY_CASES)
def test_deny_rule_matches_request(rule: Rule, req: Request, expected: bool) -> None:
    decision = authorize_request([policy("DENY", rule, name="d")], NS, LABELS, CONN, req, ROOTS)
    assert decision.allowed is not expected
    assert (decision.policy == "app/d") is expected


def test_deny_is_evaluated_before_allow() -> None:
    policies = [policy("ALLOW", to(methods=("GET",)), name="a"), policy("DENY", to(paths=("/secret",)), name="d")]
    decision = authorize_request(policies, NS, LABELS, CONN, request(path="/secret"), ROOTS)
    assert (decision.allowed, decision.reason) == (False, "denied by DENY policy app/d")
    assert allowed(policies, request(path="/open"))


def test_allow_policies_deny_by_default_and_none_allow_all() -> None:
    assert allowed([], request(method="DELETE"))
    assert allowed([policy("DENY", to(methods=("DELETE",)))], request(method="GET"))
    assert not allowed([policy("ALLOW", to(methods=("GET",)))], request(method="POST"))
    assert not allowed([policy("ALLOW")], request())  # an ALLOW policy without rules allows nothing


def test_audit_marks_matching_requests_without_changing_the_decision() -> None:
    audit = policy("AUDIT", to(paths=("/user/profile/*",)), name="audit")
    marked = authorize_request([audit], NS, LABELS, CONN, request(path="/user/profile/7"), ROOTS)
    assert (marked.allowed, marked.audit) == (True, True)
    assert not authorize_request([audit], NS, LABELS, CONN, request(path="/home"), ROOTS).audit
    denied = authorize_request(
        [audit, policy("DENY", to(paths=("/user/*",)))], NS, LABELS, CONN, request(path="/user/profile/7"), ROOTS
    )
    assert (denied.allowed, denied.audit) == (False, True)


def test_plaintext_requests_match_no_principal() -> None:
    rule = Rule(sources=(Source(principals=("*",)),), operations=(Operation(methods=("GET",)),))
    assert allowed([policy("ALLOW", rule)], request(), CONN)
    assert not allowed([policy("ALLOW", rule)], request(), PLAINTEXT)


# Each row: policies, whether the connection is allowed before any request is seen.
CONNECT_CASES = [
    ([], True),
    # A DENY rule that depends on the request cannot refuse the connection...
    ([policy("DENY", to(methods=("DELETE",)))], True),
    ([policy("DENY", when("request.headers[x-a]", ("b",)))], True),
    # ...one whose parts are all known can.
    ([policy("DENY", Rule(sources=(Source(namespaces=("client",)),)))], False),
    ([policy("DENY", to(ports=(8080,)))], False),
    ([policy("DENY", to(ports=(9090,), methods=("GET",)))], True),
    # A JWT part would match every request in a DENY rule, so the connection is refused at once.
    ([policy("DENY", Rule(sources=(Source(not_request_principals=("*",)),)))], False),
    # ALLOW: the connection proceeds when some rule's connection parts match; requests are checked later.
    ([policy("ALLOW", to(methods=("GET",)))], True),
    ([policy("ALLOW", to(ports=(9090,), methods=("GET",)))], False),
    ([policy("ALLOW", Rule(sources=(Source(namespaces=("other",)),), operations=(Operation(paths=("/x",)),)))], False),
    # An ALLOW rule that can never match a request (a JWT part) does not admit the connection.
    ([policy("ALLOW", Rule(sources=(Source(request_principals=("*",)),)))], False),
    ([policy("ALLOW", when("request.auth.principal", ("*",)), to(paths=("/x",)))], True),
]


@pytest.mark.parametrize(("policies", "expected"), CONNECT_CASES)
def test_connect_time_refuses_only_what_every_request_would_be_refused(
    policies: list[AuthorizationPolicy], expected: bool
) -> None:
    assert authorize_connection(policies, NS, LABELS, CONN, ROOTS).allowed is expected


def test_connect_time_decision_names_the_policy() -> None:
    decision = authorize_connection([policy("DENY", to(ports=(8080,)), name="d")], NS, LABELS, CONN, ROOTS)
    assert (decision.reason, decision.policy) == ("denied by DENY policy app/d", "app/d")
    maybe = authorize_connection([policy("ALLOW", to(paths=("/x",)), name="a")], NS, LABELS, CONN, ROOTS)
    assert maybe.allowed and maybe.policy == "app/a"


@pytest.mark.parametrize(
    ("policies", "port", "expected"),
    [
        ([], 8080, False),
        ([policy("ALLOW", Rule(sources=(Source(namespaces=("client",)),)))], 8080, False),
        ([policy("ALLOW", to(methods=("GET",)))], 8080, True),
        ([policy("DENY", to(ports=(8080,), paths=("/admin",)))], 8080, True),
        ([policy("DENY", to(ports=(8080,), paths=("/admin",)))], 9090, False),
        ([policy("DENY", to(not_ports=(8080,), hosts=("x",)))], 8080, False),
        ([policy("ALLOW", when("request.headers[x-a]", ("b",)))], 9090, True),
        # Only the operations that apply to the port count.
        (
            [policy("ALLOW", Rule(operations=(Operation(ports=(9090,), methods=("GET",)), Operation(ports=(8080,)))))],
            8080,
            False,
        ),
        # JWT parts are resolved without the request, and AUDIT alone changes no decision.
        ([policy("ALLOW", Rule(sources=(Source(request_principals=("*",)),)))], 8080, False),
        ([policy("AUDIT", to(paths=("/x",)))], 8080, False),
    ],
)
def test_has_http_rules_for_a_port(policies: list[AuthorizationPolicy], port: int, expected: bool) -> None:
    assert has_http_rules(policies, NS, LABELS, port, ROOTS) is expected


def test_policies_of_other_workloads_do_not_apply() -> None:
    other = AuthorizationPolicy("p", NS, (("app", "db"),), "ALLOW", (to(methods=("GET",)),))
    root = AuthorizationPolicy("r", ROOT, None, "DENY", (to(methods=("DELETE",)),))
    assert allowed([other], request(method="POST"))
    assert not allowed([other, root], request(method="DELETE"))
    assert not has_http_rules([other], NS, LABELS, 8080, ROOTS)
