"""L4 authorization and mTLS mode: Istio's semantics on wire items, with L7 parts resolved so as to fail closed."""

from __future__ import annotations

from typing import Any

import pytest

from control.model.security import AuthorizationPolicy as ControlAuthorizationPolicy
from control.model.security import PeerAuthentication as ControlPeerAuthentication
from ztunnel.rbac import Connection, Decision, applicable, authorize, mtls_mode, selects_by_label
from ztunnel.state.policy import AuthorizationPolicy, PeerAuthentication, PolicyError, PolicySet

ROOT = "istio-system"
ROOTS = (ROOT,)
NS = "app"
LABELS = {"app": "web", "version": "v1"}
CLIENT = "spiffe://cluster.local/ns/client/sa/sleep"

SOURCE_KEYS = (
    "principals notPrincipals requestPrincipals notRequestPrincipals namespaces notNamespaces "
    "ipBlocks notIpBlocks remoteIpBlocks notRemoteIpBlocks"
).split()
OPERATION_KEYS = "hosts notHosts ports notPorts methods notMethods paths notPaths".split()


def source(**fields: list[str]) -> dict[str, list[str]]:
    """A wire source as control writes it: every key present."""
    return {key: list(fields.get(key, [])) for key in SOURCE_KEYS}


def operation(**fields: list[Any]) -> dict[str, list[Any]]:
    return {key: list(fields.get(key, [])) for key in OPERATION_KEYS}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    return {"key": key, "values": values or [], "notValues": not_values or []}


def rule(
    sources: list[dict[str, Any]] | None = None,
    operations: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {"from": sources or [], "to": operations or [], "when": conditions or []}


def wire_policy(
    name: str = "p",
    action: str = "ALLOW",
    rules: list[dict[str, Any]] | None = None,
    namespace: str = NS,
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "selector": selector,
        "action": action,
        "rules": [rule()] if rules is None else rules,
        "needsL7": False,
    }


def policy(*args: Any, **kwargs: Any) -> AuthorizationPolicy:
    return AuthorizationPolicy.from_wire(wire_policy(*args, **kwargs))


def conn(
    identity: str | None = CLIENT, source_ip: str = "10.0.1.5", dest_ip: str = "10.0.2.7", port: int = 8080
) -> Connection:
    return Connection(source_ip, identity, dest_ip, port)


def decide(policies: list[AuthorizationPolicy], connection: Connection | None = None) -> Decision:
    return authorize(policies, NS, LABELS, connection or conn(), ROOTS)


# --- decision order -------------------------------------------------------------------------------------------


def test_no_policy_allows() -> None:
    assert decide([]) == Decision(True, "no ALLOW policy selects this workload", None)


def test_deny_wins_over_a_matching_allow() -> None:
    d = decide([policy("allow-all"), policy("deny-all", "DENY")])
    assert d == Decision(False, f"denied by DENY policy {NS}/deny-all", f"{NS}/deny-all")


def test_an_unmatched_deny_leaves_the_default_allow() -> None:
    deny = policy("deny-other", "DENY", [rule([source(namespaces=["other"])])])
    assert decide([deny]).allowed


def test_a_matching_allow_allows_and_names_itself() -> None:
    d = decide([policy("a", rules=[rule([source(namespaces=["nope"])])]), policy("b")])
    assert d == Decision(True, f"allowed by ALLOW policy {NS}/b", f"{NS}/b")


def test_once_an_allow_applies_an_unmatched_connection_is_denied() -> None:
    a = policy("a", rules=[rule([source(namespaces=["nope"])])])
    b = policy("b", rules=[rule(operations=[operation(ports=[9090])])])
    assert decide([a, b]) == Decision(False, f"no ALLOW policy matched ({NS}/a, {NS}/b select this workload)", None)


def test_allow_without_rules_denies_everything_it_selects() -> None:
    assert not decide([policy(rules=[])]).allowed


def test_audit_never_changes_the_decision() -> None:
    audit = policy("audit", "AUDIT")
    assert decide([audit]) == Decision(True, "no ALLOW policy selects this workload", None)
    assert not decide([audit, policy("allow-none", rules=[])]).allowed


# --- which policies apply -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "selector", "applies"),
    [
        (NS, None, True),
        (NS, {"app": "web"}, True),
        (NS, {"app": "web", "version": "v1"}, True),
        (NS, {"app": "web", "version": "v2"}, False),
        (NS, {"tier": "db"}, False),
        ("other", None, False),
        ("other", {"app": "web"}, False),
        (ROOT, None, True),
        (ROOT, {"app": "web"}, True),
        (ROOT, {"app": "db"}, False),
    ],
)
def test_applicable(namespace: str, selector: dict[str, str] | None, applies: bool) -> None:
    p = policy(namespace=namespace, selector=selector)
    assert applicable([p], NS, LABELS, ROOTS) == ([p] if applies else [])
    # An ALLOW policy without rules shows whether it applied: it denies exactly what it selects.
    assert decide([policy(namespace=namespace, selector=selector, rules=[])]).allowed is not applies


def test_applicable_keeps_the_given_order() -> None:
    ps = [policy("z"), policy("m", namespace=ROOT), policy("x", namespace="other"), policy("a")]
    assert [p.name for p in applicable(ps, NS, LABELS, ROOTS)] == ["z", "m", "a"]


# --- matching at L4: one rule, one connection, and whether the rule matches it (as ALLOW and as DENY) ----------

SLEEP = "cluster.local/ns/client/sa/sleep"
MTLS_CONN = conn()
PLAIN = conn(identity=None)


def frm(**fields: list[str]) -> dict[str, Any]:
    """A rule with one source."""
    return rule([source(**fields)])


def to(**fields: list[Any]) -> dict[str, Any]:
    """A rule with one operation."""
    return rule(operations=[operation(**fields)])


def cond(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    """A rule with one condition."""
    return rule(conditions=[when(key, values, not_values)])


MATCHES = [
    ("empty rule", rule(), MTLS_CONN, True),
    ("principal exact", frm(principals=[SLEEP]), MTLS_CONN, True),
    ("principal other", frm(principals=["cluster.local/ns/client/sa/curl"]), MTLS_CONN, False),
    ("principal is without spiffe", frm(principals=["spiffe://" + SLEEP]), MTLS_CONN, False),
    ("principal prefix", frm(principals=["cluster.local/ns/client/*"]), MTLS_CONN, True),
    ("principal suffix", frm(principals=["*/sa/sleep"]), MTLS_CONN, True),
    ("principal suffix other", frm(principals=["*/sa/curl"]), MTLS_CONN, False),
    ("principal any, mTLS", frm(principals=["*"]), MTLS_CONN, True),
    ("principal any, plaintext", frm(principals=["*"]), PLAIN, False),
    ("principal prefix, plaintext", frm(principals=["cluster.local/*"]), PLAIN, False),
    ("principals OR", frm(principals=["x/y", SLEEP]), MTLS_CONN, True),
    ("notPrincipals any, plaintext", frm(notPrincipals=["*"]), PLAIN, True),
    ("notPrincipals any, mTLS", frm(notPrincipals=["*"]), MTLS_CONN, False),
    ("notPrincipals other", frm(notPrincipals=["cluster.local/ns/x/sa/y"]), MTLS_CONN, True),
    ("namespace", frm(namespaces=["client"]), MTLS_CONN, True),
    ("namespace other", frm(namespaces=["other"]), MTLS_CONN, False),
    ("namespace prefix", frm(namespaces=["cli*"]), MTLS_CONN, True),
    ("namespace any, plaintext", frm(namespaces=["*"]), PLAIN, False),
    ("namespace of a non-workload identity", frm(namespaces=["*"]), conn("spiffe://td/meshlet/node/n1"), False),
    ("notNamespaces same", frm(notNamespaces=["client"]), MTLS_CONN, False),
    ("notNamespaces other", frm(notNamespaces=["other"]), MTLS_CONN, True),
    ("notNamespaces, plaintext", frm(notNamespaces=["client"]), PLAIN, True),
    ("namespaces AND notPrincipals", frm(namespaces=["client"], notPrincipals=["*/sa/sleep"]), MTLS_CONN, False),
    ("ipBlocks", frm(ipBlocks=["10.0.1.0/24"]), MTLS_CONN, True),
    ("ipBlocks host", frm(ipBlocks=["10.0.1.5/32"]), MTLS_CONN, True),
    ("ipBlocks other", frm(ipBlocks=["10.0.9.0/24"]), MTLS_CONN, False),
    ("ipBlocks are the source, not the destination", frm(ipBlocks=["10.0.2.7/32"]), MTLS_CONN, False),
    ("ipBlocks OR", frm(ipBlocks=["10.0.9.0/24", "10.0.0.0/16"]), MTLS_CONN, True),
    ("ipBlocks v4-mapped source", frm(ipBlocks=["10.0.1.0/24"]), conn(source_ip="::ffff:10.0.1.5"), True),
    ("ipBlocks IPv6", frm(ipBlocks=["fd00::/8"]), conn(source_ip="fd00::5", dest_ip="fd00::7"), True),
    ("ipBlocks IPv6 vs IPv4 source", frm(ipBlocks=["::/0"]), MTLS_CONN, False),
    ("notIpBlocks containing", frm(notIpBlocks=["10.0.0.0/8"]), MTLS_CONN, False),
    ("notIpBlocks other", frm(notIpBlocks=["192.168.0.0/16"]), MTLS_CONN, True),
    ("ipBlocks minus notIpBlocks", frm(ipBlocks=["10.0.0.0/8"], notIpBlocks=["10.0.1.0/24"]), MTLS_CONN, False),
    ("remoteIpBlocks is the source", frm(remoteIpBlocks=["10.0.1.0/24"]), MTLS_CONN, True),
    ("notRemoteIpBlocks", frm(notRemoteIpBlocks=["10.0.1.0/24"]), MTLS_CONN, False),
    ("sources OR", rule([source(namespaces=["other"]), source(ipBlocks=["10.0.1.0/24"])]), MTLS_CONN, True),
    ("ports", to(ports=[8080]), MTLS_CONN, True),
    ("ports other", to(ports=[9090]), MTLS_CONN, False),
    ("ports OR", to(ports=[9090, 8080]), MTLS_CONN, True),
    ("notPorts same", to(notPorts=[8080]), MTLS_CONN, False),
    ("notPorts other", to(notPorts=[9090]), MTLS_CONN, True),
    ("operations OR", rule(operations=[operation(ports=[1]), operation(ports=[8080])]), MTLS_CONN, True),
    ("from AND to", rule([source(namespaces=["client"])], [operation(ports=[9090])]), MTLS_CONN, False),
    ("source.ip", cond("source.ip", ["10.0.1.0/24"]), MTLS_CONN, True),
    ("source.ip other", cond("source.ip", ["10.9.0.0/16"]), MTLS_CONN, False),
    ("source.ip notValues", cond("source.ip", None, ["10.0.1.5/32"]), MTLS_CONN, False),
    ("remote.ip", cond("remote.ip", ["10.0.1.5/32"]), MTLS_CONN, True),
    ("remote.ip other", cond("remote.ip", ["10.0.2.7/32"]), MTLS_CONN, False),
    ("destination.ip", cond("destination.ip", ["10.0.2.0/24"]), MTLS_CONN, True),
    ("destination.ip is not the source", cond("destination.ip", ["10.0.1.5/32"]), MTLS_CONN, False),
    ("destination.ip notValues", cond("destination.ip", None, ["10.0.0.0/8"]), MTLS_CONN, False),
    ("destination.port", cond("destination.port", ["8080"]), MTLS_CONN, True),
    ("destination.port other", cond("destination.port", ["80"]), MTLS_CONN, False),
    ("destination.port notValues", cond("destination.port", None, ["8080"]), MTLS_CONN, False),
    ("source.namespace", cond("source.namespace", ["client"]), MTLS_CONN, True),
    ("source.namespace other", cond("source.namespace", ["other"]), MTLS_CONN, False),
    ("source.namespace suffix", cond("source.namespace", ["*ent"]), MTLS_CONN, True),
    ("source.namespace notValues", cond("source.namespace", None, ["client"]), MTLS_CONN, False),
    ("source.principal", cond("source.principal", [SLEEP]), MTLS_CONN, True),
    ("source.principal any, plaintext", cond("source.principal", ["*"]), PLAIN, False),
    ("source.principal notValues any, plaintext", cond("source.principal", None, ["*"]), PLAIN, True),
    ("condition values OR", cond("destination.port", ["1", "8080"]), MTLS_CONN, True),
    (
        "conditions AND",
        rule(conditions=[when("destination.port", ["8080"]), when("source.namespace", ["x"])]),
        MTLS_CONN,
        False,
    ),
]


@pytest.mark.parametrize(("rule_item", "connection", "allowed"), [m[1:] for m in MATCHES], ids=[m[0] for m in MATCHES])
def test_allow_rule_matching(rule_item: dict[str, Any], connection: Connection, allowed: bool) -> None:
    assert decide([policy(rules=[rule_item])], connection).allowed is allowed


@pytest.mark.parametrize(("rule_item", "connection", "matches"), [m[1:] for m in MATCHES], ids=[m[0] for m in MATCHES])
def test_deny_rule_matching_is_the_same(rule_item: dict[str, Any], connection: Connection, matches: bool) -> None:
    assert decide([policy(action="DENY", rules=[rule_item])], connection).allowed is not matches


# --- L7 parts at an L4 proxy ----------------------------------------------------------------------------------

L7_RULES = [
    ("requestPrincipals", rule([source(namespaces=["client"], requestPrincipals=["issuer/subject"])])),
    ("notRequestPrincipals", rule([source(namespaces=["client"], notRequestPrincipals=["*"])])),
    ("hosts", rule([source(namespaces=["client"])], [operation(ports=[8080], hosts=["web.app"])])),
    ("notHosts", rule([source(namespaces=["client"])], [operation(notHosts=["admin.app"])])),
    ("methods", rule([source(namespaces=["client"])], [operation(methods=["GET"])])),
    ("notMethods", rule([source(namespaces=["client"])], [operation(notMethods=["DELETE"])])),
    ("paths", rule([source(namespaces=["client"])], [operation(paths=["/api/*"])])),
    ("notPaths", rule([source(namespaces=["client"])], [operation(notPaths=["/admin"])])),
    ("request header", rule([source(namespaces=["client"])], conditions=[when("request.headers[x-user]", ["a"])])),
    ("jwt claim", rule([source(namespaces=["client"])], conditions=[when("request.auth.claims[iss]", ["a"])])),
]


@pytest.mark.parametrize("rule_item", [r[1] for r in L7_RULES], ids=[r[0] for r in L7_RULES])
def test_allow_rule_with_an_l7_part_never_matches(rule_item: dict[str, Any]) -> None:
    p = policy(rules=[rule_item])
    assert p.needs_l7
    assert not decide([p]).allowed
    # Another rule of the same policy still allows what it matches at L4.
    assert decide([policy(rules=[rule_item, rule([source(namespaces=["client"])])])]).allowed


@pytest.mark.parametrize("rule_item", [r[1] for r in L7_RULES], ids=[r[0] for r in L7_RULES])
def test_deny_rule_with_an_l7_part_applies_as_its_l4_part(rule_item: dict[str, Any]) -> None:
    deny = policy("deny", "DENY", rules=[rule_item])
    assert decide([deny]) == Decision(False, f"denied by DENY policy {NS}/deny", f"{NS}/deny")
    other = conn("spiffe://cluster.local/ns/other/sa/sleep")
    assert decide([deny], other).allowed  # the L4 part (namespaces: client) still limits the deny


def test_deny_of_only_l7_parts_denies_every_connection() -> None:
    deny = policy("deny", "DENY", rules=[rule(operations=[operation(methods=["DELETE"])])])
    assert not decide([deny], conn(identity=None)).allowed
    assert not decide([deny], conn(port=9090)).allowed


# --- mTLS mode ------------------------------------------------------------------------------------------------


def peer(
    name: str,
    mode: str,
    namespace: str = NS,
    selector: dict[str, str] | None = None,
    port_modes: dict[str, str] | None = None,
) -> PeerAuthentication:
    return PeerAuthentication.from_wire(
        {"name": name, "namespace": namespace, "selector": selector, "mode": mode, "portModes": port_modes or {}}
    )


WEB = {"app": "web"}


def web(name: str, mode: str, port_modes: dict[str, str] | None = None) -> PeerAuthentication:
    """A policy in the workload's namespace selecting it."""
    return peer(name, mode, selector=WEB, port_modes=port_modes)


MTLS = [
    ("nothing set", [], "PERMISSIVE"),
    ("mesh", [peer("default", "STRICT", ROOT)], "STRICT"),
    ("mesh UNSET", [peer("default", "UNSET", ROOT)], "PERMISSIVE"),
    ("root selector is not mesh-wide", [peer("r", "STRICT", ROOT, WEB)], "PERMISSIVE"),
    ("other namespace ignored", [peer("o", "STRICT", "other"), peer("s", "STRICT", "other", WEB)], "PERMISSIVE"),
    ("namespace over mesh", [peer("default", "STRICT", ROOT), peer("ns", "DISABLE")], "DISABLE"),
    ("namespace UNSET inherits mesh", [peer("default", "STRICT", ROOT), peer("ns", "UNSET")], "STRICT"),
    ("workload over namespace", [peer("ns", "STRICT"), web("w", "PERMISSIVE")], "PERMISSIVE"),
    ("unmatched selector", [peer("ns", "STRICT"), peer("w", "DISABLE", selector={"app": "db"})], "STRICT"),
    ("workload UNSET inherits namespace", [peer("ns", "DISABLE"), web("w", "UNSET")], "DISABLE"),
    ("all UNSET inherit mesh", [peer("m", "STRICT", ROOT), peer("n", "UNSET"), web("w", "UNSET")], "STRICT"),
    ("port over workload", [web("w", "STRICT", {"8080": "DISABLE"})], "DISABLE"),
    ("other port", [web("w", "STRICT", {"9090": "DISABLE"})], "STRICT"),
    ("port UNSET inherits workload", [web("w", "DISABLE", {"8080": "UNSET"})], "DISABLE"),
    ("port, workload UNSET inherit namespace", [peer("n", "STRICT"), web("w", "UNSET", {"8080": "UNSET"})], "STRICT"),
    ("port set, workload UNSET", [peer("n", "STRICT"), web("w", "UNSET", {"8080": "DISABLE"})], "DISABLE"),
    ("first selector policy by name", [web("b", "DISABLE"), peer("a", "STRICT", selector=LABELS)], "STRICT"),
    ("first namespace policy by name", [peer("z", "DISABLE"), peer("default", "STRICT")], "STRICT"),
]


@pytest.mark.parametrize(("peer_auths", "mode"), [m[1:] for m in MTLS], ids=[m[0] for m in MTLS])
def test_mtls_mode(peer_auths: list[PeerAuthentication], mode: str) -> None:
    assert mtls_mode(peer_auths, NS, LABELS, 8080, ROOTS) == mode
    assert mtls_mode(reversed(peer_auths), NS, LABELS, 8080, ROOTS) == mode  # order given does not matter


def test_mtls_mode_in_the_root_namespace() -> None:
    auths = [peer("default", "STRICT", ROOT), peer("w", "DISABLE", ROOT, WEB)]
    assert mtls_mode(auths, ROOT, LABELS, 8080, ROOTS) == "DISABLE"
    assert mtls_mode(auths, ROOT, {"app": "db"}, 8080, ROOTS) == "STRICT"


# --- conversion -----------------------------------------------------------------------------------------------


def test_conversion_precompiles_and_normalizes() -> None:
    p = policy(
        rules=[rule([source(ipBlocks=["10.0.0.0/8"])], conditions=[when("destination.port", ["080"])])],
        selector={},
    )
    assert str(p.rules[0].sources[0].ip_blocks[0]) == "10.0.0.0/8"
    assert p.rules[0].conditions[0].values == ("80",)
    assert p.selector is None  # empty labels select everything, as no selector does
    assert not p.needs_l7


def test_policy_set_converts_once_and_sorts() -> None:
    ps = PolicySet.from_wire(
        [wire_policy("b"), wire_policy("a", namespace="z"), wire_policy("a")],
        [{"name": "default", "namespace": ROOT, "selector": None, "mode": "STRICT", "portModes": {}}],
    )
    assert [p.ref for p in ps.authorization] == [f"{NS}/a", f"{NS}/b", "z/a"]
    assert mtls_mode(ps.peer_authentication, NS, LABELS, 8080, ROOTS) == "STRICT"


def test_control_wire_items_round_trip() -> None:
    """What control's model writes is what this side reads: the one contract the two packages share."""
    spec = {
        "selector": {"matchLabels": {"app": "web"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"namespaces": ["client"], "ipBlocks": ["10.0.1.5"]}}],
                "to": [{"operation": {"ports": ["8080"]}}],
                "when": [{"key": "destination.port", "values": ["8080"]}],
            }
        ],
    }
    meta = {"name": "web", "namespace": NS}
    authz = ControlAuthorizationPolicy.from_k8s(
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta, "spec": spec}
    )
    peer_auth = ControlPeerAuthentication.from_k8s(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": meta,
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "portLevelMtls": {8080: {"mode": "STRICT"}}},
        }
    )
    ps = PolicySet.from_wire([authz.to_wire()], [peer_auth.to_wire()])
    assert decide(list(ps.authorization)).allowed
    assert not decide(list(ps.authorization), conn(source_ip="10.0.1.6")).allowed
    assert mtls_mode(ps.peer_authentication, NS, LABELS, 8080, ROOTS) == "STRICT"
    assert mtls_mode(ps.peer_authentication, NS, LABELS, 9090, ROOTS) == "PERMISSIVE"


def broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A valid wire policy with the value at `path` replaced."""
    item = wire_policy(
        "bad",
        rules=[
            rule(
                [source(namespaces=["client"]), source(ipBlocks=["10.0.0.0/8"])],
                [operation(ports=[8080])],
                [when("source.ip", ["10.0.0.0/8"])],
            )
        ],
    )
    target: Any = item
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return item


MALFORMED = [
    (("action",), "CUSTOM", "action: expected one of ALLOW, DENY, AUDIT"),
    (("selector",), ["app"], "selector: expected a mapping"),
    (("rules",), {}, "rules: expected a list"),
    (("rules", 0), "x", "rules[0]: expected a mapping"),
    (("rules", 0, "from", 1, "ipBlocks", 0), "10.0.0.300", "rules[0].from[1].ipBlocks[0]: '10.0.0.300' is not a CIDR"),
    (("rules", 0, "from", 0, "namespaces"), [""], "rules[0].from[0].namespaces[0]: expected a non-empty string"),
    (("rules", 0, "from", 0, "notPrincipal"), ["x"], "rules[0].from[0].notPrincipal: unknown field"),
    (("rules", 0, "to", 0, "ports", 0), 70000, "rules[0].to[0].ports[0]: expected a port number"),
    (("rules", 0, "to", 0, "ports", 0), True, "rules[0].to[0].ports[0]: expected a port number"),
    (("rules", 0, "when", 0, "values", 0), "ten", "rules[0].when[0].values[0]: 'ten' is not a CIDR"),
    (("rules", 0, "when", 0, "key"), None, "rules[0].when[0].key: expected a non-empty string"),
    (("targetRef",), {}, "targetRef: unknown field"),
    (("needsL7",), "no", "needsL7: expected a boolean"),
]


@pytest.mark.parametrize(("path", "value", "message"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_authorization_policy_names_policy_and_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^AuthorizationPolicy app/bad: ") as info:
        AuthorizationPolicy.from_wire(broken(path, value))
    assert message in str(info.value)
    with pytest.raises(PolicyError, match="AuthorizationPolicy app/bad"):
        PolicySet.from_wire([wire_policy("ok"), broken(path, value)], [])


def test_item_without_a_name_says_what_it_can() -> None:
    with pytest.raises(PolicyError, match=r"^AuthorizationPolicy app/\?: name: expected a non-empty string"):
        AuthorizationPolicy.from_wire({"namespace": NS, "action": "ALLOW", "rules": []})
    with pytest.raises(PolicyError, match="AuthorizationPolicy: expected a mapping"):
        AuthorizationPolicy.from_wire([])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "MUTUAL"}, "PeerAuthentication app/pa: mode: expected one of UNSET, DISABLE, PERMISSIVE, STRICT"),
        ({"portModes": {"http": "STRICT"}}, "PeerAuthentication app/pa: portModes.http: expected a port number"),
        ({"portModes": {"8080": "ON"}}, "PeerAuthentication app/pa: portModes.8080: expected one of"),
        ({"selector": None}, "PeerAuthentication app/pa: portModes: a policy without a selector cannot set port"),
    ],
)
def test_malformed_peer_authentication_names_policy_and_field(change: dict[str, Any], message: str) -> None:
    item = {"name": "pa", "namespace": NS, "selector": WEB, "mode": "STRICT", "portModes": {"8080": "DISABLE"}}
    with pytest.raises(PolicyError) as info:
        PeerAuthentication.from_wire(item | change)
    assert str(info.value).startswith(message)


# --- a workload whose labels are unknown ----------------------------------------------------------------------


def test_labels_decide_only_where_a_policy_of_the_namespace_or_the_root_selects_by_label() -> None:
    assert not selects_by_label([], NS, ROOTS)
    assert not selects_by_label([policy(), policy("root-wide", namespace=ROOT)], NS, ROOTS)  # no selector
    assert not selects_by_label([policy("elsewhere", namespace="other", selector={"app": "x"})], NS, ROOTS)
    assert selects_by_label([policy("mine", action="DENY", selector={"app": "x"})], NS, ROOTS)
    assert selects_by_label([policy("mesh-wide", namespace=ROOT, selector={"app": "x"})], NS, ROOTS)
