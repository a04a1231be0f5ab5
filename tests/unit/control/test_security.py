"""AuthorizationPolicy and PeerAuthentication: Istio's examples convert, bad input names its field and reason."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from control.model.fields import ObjectKey, ValidationError
from control.model.security import AuthorizationPolicy, PeerAuthentication, Rule, Source


def authz(spec: Any, api_version: str = "security.istio.io/v1") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "httpbin", "namespace": "foo"},
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


def peer(spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "foo"},
        "spec": spec,
    }


def rule_of(source: dict[str, Any] | None = None, operation: dict[str, Any] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if source is not None:
        rule["from"] = [{"source": source}]
    if operation is not None:
        rule["to"] = [{"operation": operation}]
    return rule


def invalid(obj: dict[str, Any], convert: Any = AuthorizationPolicy.from_k8s) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        convert(obj)
    return info.value


EMPTY_SOURCE: dict[str, list[Any]] = {
    k: []
    for k in (
        "principals",
        "notPrincipals",
        "requestPrincipals",
        "notRequestPrincipals",
        "namespaces",
        "notNamespaces",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
    )
}
EMPTY_OPERATION: dict[str, list[Any]] = {
    k: [] for k in ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
}

# The first example of Istio's AuthorizationPolicy reference, verbatim.
ISTIO_HTTPBIN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
      version: v1
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["dev"]
    to:
    - operation:
        methods: ["GET"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
"""


def test_istio_reference_example_converts_to_the_wire_shape() -> None:
    policy = AuthorizationPolicy.from_k8s(yaml.safe_load(ISTIO_HTTPBIN))
    assert policy.key == ObjectKey("AuthorizationPolicy", "foo", "httpbin")
    assert policy.selector == (("app", "httpbin"), ("version", "v1"))
    assert policy.to_wire() == {
        "name": "httpbin",
        "namespace": "foo",
        "selector": {"app": "httpbin", "version": "v1"},
        "action": "ALLOW",
        "rules": [
            {
                "from": [
                    {**EMPTY_SOURCE, "principals": ["cluster.local/ns/default/sa/sleep"]},
                    {**EMPTY_SOURCE, "namespaces": ["dev"]},
                ],
                "to": [{**EMPTY_OPERATION, "methods": ["GET"]}],
                "when": [
                    {"key": "request.auth.claims[iss]", "values": ["https://accounts.google.com"], "notValues": []}
                ],
            }
        ],
        "needsL7": True,
    }
    json.dumps(policy.to_wire())


def test_deny_from_other_namespaces_is_l4() -> None:
    policy = AuthorizationPolicy.from_k8s(authz({"action": "DENY", "rules": [rule_of({"notNamespaces": ["foo"]})]}))
    assert policy.action == "DENY"
    assert policy.rules == (Rule(sources=(Source(not_namespaces=("foo",)),)),)
    assert policy.to_wire()["needsL7"] is False


def test_tcp_example_with_ports_and_principals() -> None:
    spec = {
        "selector": {"matchLabels": {"app": "tcp-echo"}},
        "rules": [
            rule_of({"principals": ["cluster.local/ns/default/sa/sleep"]}, {"ports": ["9000", 9001]}),
            {"when": [{"key": "destination.port", "values": ["9002"]}, {"key": "source.ip", "values": ["10.1.2.3"]}]},
        ],
    }
    policy = AuthorizationPolicy.from_k8s(authz(spec))
    assert policy.rules[0].operations[0].ports == (9000, 9001)
    assert policy.rules[1].conditions[1].values == ("10.1.2.3/32",)
    assert policy.needs_l7 is False
    assert policy.to_wire()["rules"][0]["to"][0]["ports"] == [9000, 9001]


@pytest.mark.parametrize("api_version", ["security.meshlet.io/v1", "security.istio.io/v1", "security.istio.io/v1beta1"])
def test_accepted_api_versions(api_version: str) -> None:
    assert AuthorizationPolicy.from_k8s(authz({}, api_version)).action == "ALLOW"


def test_rules_absent_or_empty_match_nothing_and_an_empty_rule_matches_everything() -> None:
    absent = AuthorizationPolicy.from_k8s(authz({}))
    no_spec = AuthorizationPolicy.from_k8s(authz(None))
    empty = AuthorizationPolicy.from_k8s(authz({"rules": []}))
    allow_all = AuthorizationPolicy.from_k8s(authz({"rules": [{}]}))
    assert absent.rules == no_spec.rules == empty.rules == ()
    assert absent.to_wire()["rules"] == []
    assert allow_all.rules == (Rule(),)
    assert allow_all.to_wire()["rules"] == [{"from": [], "to": [], "when": []}]
    assert absent.selector is None and absent.to_wire()["selector"] is None


def test_deny_all_needs_an_empty_rule() -> None:
    assert AuthorizationPolicy.from_k8s(authz({"action": "DENY", "rules": [{}]})).rules == (Rule(),)
    for spec in ({"action": "DENY"}, {"action": "DENY", "rules": []}):
        err = invalid(authz(spec))
        assert err.field == "spec.rules"
        assert "add an empty rule {}" in err.reason


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("1.2.3.4", "1.2.3.4/32"),
        ("5.6.7.0/24", "5.6.7.0/24"),
        ("10.1.2.3/16", "10.1.0.0/16"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("2001:DB8::/32", "2001:db8::/32"),
    ],
)
def test_ip_blocks_are_normalized_cidrs(raw: str, normalized: str) -> None:
    fields = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
    policy = AuthorizationPolicy.from_k8s(authz({"rules": [rule_of({f: [raw] for f in fields})]}))
    wire = policy.to_wire()["rules"][0]["from"][0]
    assert [wire[f] for f in fields] == [[normalized]] * 4


def test_unknown_field_is_named_with_a_suggestion() -> None:
    err = invalid(authz({"rules": [rule_of({"notPrincipal": ["cluster.local/ns/foo/sa/bar"]})]}))
    assert err.field == "spec.rules[0].from[0].source.notPrincipal"
    assert "unknown field 'notPrincipal'" in err.reason
    assert "did you mean 'notPrincipals'?" in err.reason


def test_custom_action_is_rejected() -> None:
    err = invalid(authz({"action": "CUSTOM", "provider": {"name": "ext-authz"}, "rules": [{}]}))
    assert err.field == "spec.action"
    assert "CUSTOM (external authorization) is not supported" in err.reason


def src(**fields: Any) -> dict[str, Any]:
    return {"rules": [rule_of(fields)]}


def op(**fields: Any) -> dict[str, Any]:
    return {"rules": [rule_of(operation=fields)]}


def when(*conditions: Any) -> dict[str, Any]:
    return {"rules": [{"when": list(conditions)}]}


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"action": "allow"}, "spec.action", "expected one of ALLOW, DENY, AUDIT"),
        ({"provider": {"name": "x"}}, "spec.provider", "not supported"),
        ({"targetRef": {"kind": "Service", "name": "a"}}, "spec.targetRef", "not supported; use selector"),
        ({"targetRefs": [{"kind": "Service", "name": "a"}]}, "spec.targetRefs", "not supported; use selector"),
        ({"selectr": {}}, "spec.selectr", "did you mean 'selector'?"),
        ({"selector": {"labels": {"a": "b"}}}, "spec.selector.labels", "did you mean 'matchLabels'?"),
        ({"selector": {"matchLabels": {"app": 1}}}, "spec.selector.matchLabels.app", "label values are strings"),
        ({"rules": {}}, "spec.rules", "expected a list"),
        ({"rules": [None]}, "spec.rules[0]", "expected a mapping, got null"),
        ({"rules": [{"form": []}]}, "spec.rules[0].form", "did you mean 'from'?"),
        ({"rules": [{"from": []}]}, "spec.rules[0].from", "must not be empty"),
        ({"rules": [{"to": []}]}, "spec.rules[0].to", "must not be empty"),
        ({"rules": [{"from": [{}]}]}, "spec.rules[0].from[0].source", "required"),
        ({"rules": [{"from": [{"source": {}}]}]}, "spec.rules[0].from[0].source", "at least one field"),
        ({"rules": [{"from": [{"principals": ["a"]}]}]}, "spec.rules[0].from[0].principals", "known fields: source"),
        ({"rules": [{"to": [{"operation": None}]}]}, "spec.rules[0].to[0].operation", "at least one field"),
        (
            src(ipBlocks=["1.2.3.4", "5.6.7.0/24", "10.0.0.300"]),
            "spec.rules[0].from[0].source.ipBlocks[2]",
            "not an IP",
        ),
        (src(notIpBlocks=["10.0.0.0/33"]), "spec.rules[0].from[0].source.notIpBlocks[0]", "not an IP address or CIDR"),
        (src(remoteIpBlocks=["10.0.0.0/255.0.0.0"]), "spec.rules[0].from[0].source.remoteIpBlocks[0]", "not an IP"),
        (src(principals=["cluster.local/ns/*/sa/bar"]), "spec.rules[0].from[0].source.principals[0]", "'*' is allowed"),
        (src(principals=["spiffe://cluster.local/ns/a/sa/b"]), "spec.rules[0].from[0].source.principals[0]", "without"),
        (src(principals=[""]), "spec.rules[0].from[0].source.principals[0]", "must not be empty"),
        (src(namespaces="foo"), "spec.rules[0].from[0].source.namespaces", "expected a list"),
        (src(namespaces=[7]), "spec.rules[0].from[0].source.namespaces[0]", "expected a string"),
        (op(ports=["80", "http"]), "spec.rules[0].to[0].operation.ports[1]", "expected a port number"),
        (op(notPorts=[0]), "spec.rules[0].to[0].operation.notPorts[0]", "out of range 1..65535"),
        (op(ports=["65536"]), "spec.rules[0].to[0].operation.ports[0]", "out of range 1..65535"),
        (op(paths=["/api/*/users"]), "spec.rules[0].to[0].operation.paths[0]", "'*' is allowed only alone"),
        (op(paths=["/{*}/x/{name}"]), "spec.rules[0].to[0].operation.paths[0]", "path template"),
        (op(notPaths=["/a", "/{**}/x/{*}"]), "spec.rules[0].to[0].operation.notPaths[1]", "{**} must be the last"),
        (op(paths=["/files/{*}.txt"]), "spec.rules[0].to[0].operation.paths[0]", "must be a whole segment"),
        (op(method=["GET"]), "spec.rules[0].to[0].operation.method", "did you mean 'methods'?"),
        (when({"values": ["a"]}), "spec.rules[0].when[0].key", "required"),
        (when({"key": "source.ip"}), "spec.rules[0].when[0].values", "needs values or notValues"),
        (when({"key": "source.ip", "values": ["x"]}), "spec.rules[0].when[0].values[0]", "not an IP"),
        (when({"key": "destination.port", "notValues": ["70000"]}), "spec.rules[0].when[0].notValues[0]", "range"),
        (when({"key": "request.header[x]", "values": ["a"]}), "spec.rules[0].when[0].key", "'request.header[x]'"),
        (when({"key": "request.headers", "values": ["a"]}), "spec.rules[0].when[0].key", "in brackets"),
        (when({"key": "destination.labels[app]", "values": ["a"]}), "spec.rules[0].when[0].key", "spec.selector"),
        (when({"key": "source.ip", "value": ["a"]}), "spec.rules[0].when[0].value", "did you mean 'values'?"),
    ],
)
def test_invalid_policy_names_field_and_reason(spec: dict[str, Any], field: str, reason: str) -> None:
    err = invalid(authz(spec))
    assert err.field == field
    assert reason in err.reason


@pytest.mark.parametrize(
    ("obj", "field", "reason"),
    [
        ({**authz({}), "apiVersion": "security.istio.io/v1alpha1"}, "apiVersion", "security.meshlet.io/v1"),
        ({**authz({}), "kind": "PeerAuthentication"}, "kind", "expected AuthorizationPolicy"),
        ({**authz({}), "metadata": {"name": "a"}}, "metadata.namespace", "required"),
        ({**authz({}), "spec": []}, "spec", "expected a mapping"),
    ],
)
def test_invalid_envelope(obj: dict[str, Any], field: str, reason: str) -> None:
    err = invalid(obj)
    assert err.field == field
    assert reason in err.reason


@pytest.mark.parametrize(
    ("rule", "needs_l7"),
    [
        ({}, False),
        (rule_of({"principals": ["*"], "notIpBlocks": ["10.0.0.0/8"], "remoteIpBlocks": ["1.2.3.4"]}), False),
        (rule_of(operation={"ports": [80], "notPorts": ["81"]}), False),
        ({"when": [{"key": "source.namespace", "values": ["foo"]}]}, False),
        (rule_of({"requestPrincipals": ["https://issuer/*"]}), True),
        (rule_of({"notRequestPrincipals": ["*"]}), True),
        (rule_of(operation={"notMethods": ["POST"]}), True),
        (rule_of(operation={"paths": ["/admin*"]}), True),
        (rule_of(operation={"hosts": ["*.example.com"]}), True),
        ({"when": [{"key": "request.headers[User-Agent]", "values": ["curl/*"]}]}, True),
        ({"when": [{"key": "connection.sni", "values": ["a.example.com"]}]}, True),
    ],
)
def test_needs_l7(rule: dict[str, Any], needs_l7: bool) -> None:
    policy = AuthorizationPolicy.from_k8s(authz({"rules": [rule]}))
    assert policy.needs_l7 is needs_l7
    assert policy.to_wire()["needsL7"] is needs_l7


def test_accepted_wildcards_and_condition_keys() -> None:
    policy = AuthorizationPolicy.from_k8s(
        authz(
            {
                "rules": [
                    rule_of(
                        {"principals": ["*", "cluster.local/ns/foo/*", "*/sa/bar"], "namespaces": ["team-*"]},
                        {"paths": ["/api/{*}/items/{**}", "*.html"], "methods": ["GET"]},
                    ),
                    {
                        "when": [
                            {"key": "request.auth.claims[groups][0]", "values": ["admins"]},
                            {"key": "experimental.envoy.filters.network.mysql_proxy[db.table]", "values": ["[update]"]},
                            {"key": "request.headers[Accept]", "values": ["*/*"]},
                            {"key": "destination.ip", "notValues": ["fd00::1"]},
                        ]
                    },
                ]
            }
        )
    )
    assert policy.rules[0].sources[0].principals == ("*", "cluster.local/ns/foo/*", "*/sa/bar")
    assert policy.rules[1].conditions[3].not_values == ("fd00::1/128",)


def test_selector_empty_match_labels_selects_the_namespace() -> None:
    assert AuthorizationPolicy.from_k8s(authz({"selector": {"matchLabels": {}}})).selector is None
    assert AuthorizationPolicy.from_k8s(authz({"selector": {}})).selector is None


# PeerAuthentication


def test_peer_authentication_namespace_strict() -> None:
    pa = PeerAuthentication.from_k8s(peer({"mtls": {"mode": "STRICT"}}))
    assert pa.key == ObjectKey("PeerAuthentication", "foo", "default")
    assert pa.to_wire() == {"name": "default", "namespace": "foo", "selector": None, "mode": "STRICT", "portModes": {}}


def test_peer_authentication_port_level_from_yaml() -> None:
    obj = yaml.safe_load(
        """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: finance
  namespace: foo
spec:
  selector:
    matchLabels:
      app: finance
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
    "9090":
      mode: PERMISSIVE
"""
    )
    pa = PeerAuthentication.from_k8s(obj)
    assert pa.port_modes == ((8080, "DISABLE"), (9090, "PERMISSIVE"))
    assert pa.to_wire() == {
        "name": "finance",
        "namespace": "foo",
        "selector": {"app": "finance"},
        "mode": "STRICT",
        "portModes": {"8080": "DISABLE", "9090": "PERMISSIVE"},
    }


def test_peer_authentication_defaults_to_unset() -> None:
    assert PeerAuthentication.from_k8s(peer(None)).mode == "UNSET"
    assert PeerAuthentication.from_k8s(peer({"mtls": {}})).mode == "UNSET"


SELECTED = {"selector": {"matchLabels": {"app": "a"}}}


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"mtls": {"mode": "strict"}}, "spec.mtls.mode", "expected one of UNSET, DISABLE, PERMISSIVE, STRICT"),
        ({"mtls": {"mod": "STRICT"}}, "spec.mtls.mod", "did you mean 'mode'?"),
        ({"mtls": "STRICT"}, "spec.mtls", "expected a mapping"),
        ({"mTLS": {"mode": "STRICT"}}, "spec.mTLS", "did you mean 'mtls'?"),
        ({"portLevelMtls": {8080: {"mode": "DISABLE"}}}, "spec.portLevelMtls", "needs a selector"),
        ({**SELECTED, "portLevelMtls": {}}, "spec.portLevelMtls", "must not be empty"),
        ({**SELECTED, "portLevelMtls": {"http": {"mode": "DISABLE"}}}, "spec.portLevelMtls.http", "port number"),
        ({**SELECTED, "portLevelMtls": {0: {"mode": "DISABLE"}}}, "spec.portLevelMtls.0", "out of range"),
        ({**SELECTED, "portLevelMtls": {8080: {"mode": "OFF"}}}, "spec.portLevelMtls.8080.mode", "unknown mode"),
        ({**SELECTED, "portLevelMtls": {80: {}, "80": {}}}, "spec.portLevelMtls.80", "listed twice"),
    ],
)
def test_invalid_peer_authentication(spec: dict[str, Any], field: str, reason: str) -> None:
    err = invalid(peer(spec), PeerAuthentication.from_k8s)
    assert err.field == field
    assert reason in err.reason


# Property: any valid policy converts deterministically, its wire form is JSON, and reading the wire form back
# (as Kubernetes fields) gives the same policy, so normalization is idempotent.

_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
_principals = st.one_of(
    st.just("*"),
    st.builds(lambda ns, sa: f"cluster.local/ns/{ns}/sa/{sa}", _names, _names),
    st.builds(lambda ns: f"cluster.local/ns/{ns}/*", _names),
)
_ipv4 = st.builds(lambda ip, n: f"{ip}/{n}", st.ip_addresses(v=4), st.integers(0, 32))
_ipv6 = st.builds(lambda ip, n: f"{ip}/{n}", st.ip_addresses(v=6), st.integers(0, 128))
_ips = st.one_of(st.ip_addresses().map(str), _ipv4, _ipv6)
_ports = st.one_of(st.integers(1, 65535), st.integers(1, 65535).map(str))
_source = st.fixed_dictionaries(
    {},
    optional={
        "principals": st.lists(_principals, min_size=1, max_size=3),
        "notPrincipals": st.lists(_principals, min_size=1, max_size=2),
        "requestPrincipals": st.lists(st.just("https://issuer.example.com/*"), min_size=1, max_size=1),
        "namespaces": st.lists(_names, min_size=1, max_size=3),
        "notNamespaces": st.lists(_names, min_size=1, max_size=2),
        "ipBlocks": st.lists(_ips, min_size=1, max_size=3),
        "notRemoteIpBlocks": st.lists(_ips, min_size=1, max_size=2),
    },
).filter(bool)
_operation = st.fixed_dictionaries(
    {},
    optional={
        "ports": st.lists(_ports, min_size=1, max_size=3),
        "notPorts": st.lists(_ports, min_size=1, max_size=2),
        "methods": st.lists(st.sampled_from(["GET", "POST", "PUT"]), min_size=1, max_size=2),
        "paths": st.lists(st.sampled_from(["/", "/api/*", "*.html", "/x/{*}/y"]), min_size=1, max_size=2),
        "hosts": st.lists(st.sampled_from(["*.example.com", "example.com"]), min_size=1, max_size=2),
    },
).filter(bool)
_condition = st.one_of(
    st.fixed_dictionaries({"key": st.just("source.ip"), "values": st.lists(_ips, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"key": st.just("destination.port"), "notValues": st.lists(_ports.map(str), min_size=1)}),
    st.fixed_dictionaries({"key": st.just("request.headers[x-user]"), "values": st.lists(_names, min_size=1)}),
)
_rule = st.fixed_dictionaries(
    {},
    optional={
        "from": st.lists(st.builds(lambda s: {"source": s}, _source), min_size=1, max_size=2),
        "to": st.lists(st.builds(lambda o: {"operation": o}, _operation), min_size=1, max_size=2),
        "when": st.lists(_condition, max_size=2),
    },
)
_spec = st.fixed_dictionaries(
    {"action": st.sampled_from(["ALLOW", "DENY", "AUDIT"]), "rules": st.lists(_rule, min_size=1, max_size=3)},
    optional={"selector": st.builds(lambda v: {"matchLabels": {"app": v}}, _names)},
)


def _spec_from_wire(wire: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes spec that a wire policy came from, modulo normalization."""

    def nonempty(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v}

    spec: dict[str, Any] = {"action": wire["action"], "rules": []}
    if wire["selector"] is not None:
        spec["selector"] = {"matchLabels": wire["selector"]}
    for rule in wire["rules"]:
        raw: dict[str, Any] = {"when": [nonempty(c) for c in rule["when"]]}
        if rule["from"]:
            raw["from"] = [{"source": nonempty(s)} for s in rule["from"]]
        if rule["to"]:
            raw["to"] = [{"operation": nonempty(o)} for o in rule["to"]]
        spec["rules"].append(raw)
    return spec


@settings(database=None, max_examples=60)
@given(_spec)
def test_valid_policies_convert_deterministically_and_round_trip(spec: dict[str, Any]) -> None:
    obj = authz(spec)
    policy = AuthorizationPolicy.from_k8s(obj)
    assert AuthorizationPolicy.from_k8s(copy.deepcopy(obj)) == policy
    wire = policy.to_wire()
    assert json.loads(json.dumps(wire)) == wire
    assert AuthorizationPolicy.from_k8s(authz(_spec_from_wire(wire))) == policy
    # What ztunnel reads back with the shared types is the policy control validated.
    assert AuthorizationPolicy.from_wire(json.loads(json.dumps(wire))) == policy
