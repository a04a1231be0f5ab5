"""The policy decision as tables, no sockets: a config version's policies (sent as control sends them, read back
and indexed as ztunnel holds them), one workload, one connection, and the verdict with the policy that gave it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlet_contracts.policy import (
    Action,
    AuthorizationPolicy,
    Condition,
    MtlsMode,
    Operation,
    PeerAuthentication,
    Rule,
    Source,
)
from ztunnel.rbac import Connection, authorize, mtls_mode
from ztunnel.state.policy import PolicySet

ROOT = "meshlet-system"
ROOTS = (ROOT,)
NS = "app"
WEB = {"app": "web", "version": "v1"}
SLEEP = "spiffe://cluster.local/ns/client/sa/sleep"
MTLS = Connection("10.0.1.5", SLEEP, "10.0.2.7", 8080)
PLAIN = Connection("10.0.1.5", None, "10.0.2.7", 8080)
OTHER_NS = Connection("10.0.1.5", "spiffe://cluster.local/ns/other/sa/sleep", "10.0.2.7", 8080)


def net(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def pol(
    name: str, action: Action, *rules: Rule, ns: str = NS, selector: Mapping[str, str] | None = None
) -> AuthorizationPolicy:
    return AuthorizationPolicy(name, ns, tuple(sorted(selector.items())) if selector else None, action, rules)


def allow(name: str, *rules: Rule, **kw: Any) -> AuthorizationPolicy:
    return pol(name, "ALLOW", *rules, **kw)


def deny(name: str, *rules: Rule, **kw: Any) -> AuthorizationPolicy:
    return pol(name, "DENY", *rules, **kw)


def frm(**fields: Any) -> Rule:
    return Rule(sources=(Source(**fields),))


def to(**fields: Any) -> Rule:
    return Rule(operations=(Operation(**fields),))


def when(key: str, values: tuple[str, ...] = (), not_values: tuple[str, ...] = ()) -> Rule:
    return Rule(conditions=(Condition(key, values, not_values),))


ANY = Rule()
FROM_CLIENT = frm(namespaces=("client",))
FROM_OTHER = frm(namespaces=("other",))
L7_GET = Rule(sources=(Source(namespaces=("client",)),), operations=(Operation(methods=("GET",)),))


def held(policies: list[AuthorizationPolicy]) -> PolicySet:
    """The policies as ztunnel holds them after control sent them: to the wire and back, indexed."""
    return PolicySet.from_wire([p.to_wire() for p in policies], [])


# (id, policies, workload labels, connection, allowed, deciding policy)
DECISIONS: list[tuple[str, list[AuthorizationPolicy], Mapping[str, str], Connection, bool, str | None]] = [
    ("no policy: allow", [], WEB, MTLS, True, None),
    ("DENY before ALLOW", [allow("a", ANY), deny("d", ANY)], WEB, MTLS, False, "app/d"),
    ("unmatched DENY, matching ALLOW", [deny("d", FROM_OTHER), allow("a", FROM_CLIENT)], WEB, MTLS, True, "app/a"),
    ("no ALLOW applies: allow", [deny("d", FROM_OTHER)], WEB, MTLS, True, None),
    ("an ALLOW applies: default deny", [allow("a", FROM_OTHER)], WEB, MTLS, False, None),
    ("any matching ALLOW allows", [allow("a", FROM_OTHER), allow("b", FROM_CLIENT)], WEB, MTLS, True, "app/b"),
    ("ALLOW without rules denies", [allow("a")], WEB, MTLS, False, None),
    ("other namespace ignored", [deny("d", ANY, ns="other"), allow("a", ns="other")], WEB, MTLS, True, None),
    ("root DENY applies", [deny("d", ANY, ns=ROOT), allow("a", ANY)], WEB, MTLS, False, f"{ROOT}/d"),
    ("root ALLOW applies", [allow("a", FROM_OTHER, ns=ROOT)], WEB, MTLS, False, None),
    ("root ALLOW matches", [allow("a", FROM_CLIENT, ns=ROOT)], WEB, MTLS, True, f"{ROOT}/a"),
    ("root selector matches", [deny("d", ANY, ns=ROOT, selector={"app": "web"})], WEB, MTLS, False, f"{ROOT}/d"),
    ("root selector does not", [deny("d", ANY, ns=ROOT, selector={"app": "db"})], WEB, MTLS, True, None),
    ("selector matches", [deny("d", ANY, selector={"app": "web", "version": "v1"})], WEB, MTLS, False, "app/d"),
    ("selector needs every label", [deny("d", ANY, selector={"app": "web", "version": "v2"})], WEB, MTLS, True, None),
    ("selector vs no labels", [allow("a", selector={"app": "web"})], {}, MTLS, True, None),
    ("principal", [allow("a", frm(principals=("cluster.local/ns/client/sa/sleep",)))], WEB, MTLS, True, "app/a"),
    ("principal prefix", [allow("a", frm(principals=("cluster.local/ns/client/*",)))], WEB, MTLS, True, "app/a"),
    ("principal other", [allow("a", frm(principals=("cluster.local/ns/x/sa/y",)))], WEB, MTLS, False, None),
    ("principal *, plaintext", [allow("a", frm(principals=("*",)))], WEB, PLAIN, False, None),
    ("notPrincipals *, plaintext", [deny("d", frm(not_principals=("*",)))], WEB, PLAIN, False, "app/d"),
    ("notPrincipals *, mTLS", [deny("d", frm(not_principals=("*",)))], WEB, MTLS, True, None),
    ("namespaces", [allow("a", FROM_CLIENT)], WEB, OTHER_NS, False, None),
    ("notNamespaces", [deny("d", frm(not_namespaces=("client",)))], WEB, OTHER_NS, False, "app/d"),
    ("notNamespaces, own", [deny("d", frm(not_namespaces=("client",)))], WEB, MTLS, True, None),
    ("ipBlocks", [allow("a", frm(ip_blocks=net("10.0.1.0/24")))], WEB, MTLS, True, "app/a"),
    ("ipBlocks other", [allow("a", frm(ip_blocks=net("10.9.0.0/16")))], WEB, MTLS, False, None),
    ("notIpBlocks", [allow("a", frm(ip_blocks=net("10.0.0.0/8"), not_ip_blocks=net("10.0.1.5/32")))], WEB, MTLS,
     False, None),
    ("remoteIpBlocks", [deny("d", frm(remote_ip_blocks=net("10.0.1.0/24")))], WEB, MTLS, False, "app/d"),
    ("notRemoteIpBlocks", [deny("d", frm(not_remote_ip_blocks=net("10.0.1.0/24")))], WEB, MTLS, True, None),
    ("ports", [allow("a", to(ports=(8080,)))], WEB, MTLS, True, "app/a"),
    ("ports other", [allow("a", to(ports=(9090,)))], WEB, MTLS, False, None),
    ("notPorts", [deny("d", to(not_ports=(9090,)))], WEB, MTLS, False, "app/d"),
    ("notPorts same", [deny("d", to(not_ports=(8080,)))], WEB, MTLS, True, None),
    ("when source.ip", [allow("a", when("source.ip", ("10.0.1.0/24",)))], WEB, MTLS, True, "app/a"),
    ("when destination.port not", [allow("a", when("destination.port", (), ("8080",)))], WEB, MTLS, False, None),
    ("when destination.ip", [deny("d", when("destination.ip", ("10.0.2.7/32",)))], WEB, MTLS, False, "app/d"),
    ("when source.namespace", [allow("a", when("source.namespace", ("client",)))], WEB, MTLS, True, "app/a"),
    ("L7 in ALLOW fails closed", [allow("a", L7_GET)], WEB, MTLS, False, None),
    ("L7 ALLOW beside an L4 rule", [allow("a", L7_GET, FROM_CLIENT)], WEB, MTLS, True, "app/a"),
    ("L7 header in ALLOW", [allow("a", when("request.headers[x-user]", ("a",)))], WEB, MTLS, False, None),
    ("L7 in DENY ignored: denies", [deny("d", L7_GET)], WEB, MTLS, False, "app/d"),
    ("L7 in DENY keeps its L4 part", [deny("d", L7_GET)], WEB, OTHER_NS, True, None),
    ("L7-only DENY denies all", [deny("d", to(paths=("/admin",)))], WEB, PLAIN, False, "app/d"),
    ("AUDIT alone", [pol("au", "AUDIT", ANY)], WEB, MTLS, True, None),
    ("AUDIT beside ALLOW", [pol("au", "AUDIT", ANY), allow("a")], WEB, MTLS, False, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("policies", "labels", "connection", "allowed", "by"), [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS]
)
def test_decision(
    policies: list[AuthorizationPolicy],
    labels: Mapping[str, str],
    connection: Connection,
    allowed: bool,
    by: str | None,
) -> None:
    decision = authorize(held(policies).authorization, NS, labels, connection, ROOTS)
    assert (decision.allowed, decision.policy) == (allowed, by)
    # Indexed or scanned, the verdict and its reason are the same.
    assert authorize(sorted(policies, key=lambda p: (p.namespace, p.name)), NS, labels, connection, ROOTS) == decision


def test_denial_by_default_names_the_allow_policies_that_applied() -> None:
    policies = held([allow("b", FROM_OTHER), allow("a", FROM_OTHER, ns=ROOT), allow("c", ns="other")])
    decision = authorize(policies.authorization, NS, WEB, MTLS, ROOTS)
    # Sorted by namespace/name, whatever the order control sent them in; the other namespace's is not named.
    assert decision.reason == "no ALLOW policy matched (app/b, meshlet-system/a select this workload)"


def peer(
    name: str,
    mode: MtlsMode,
    ns: str = NS,
    selector: Mapping[str, str] | None = None,
    ports: dict[int, MtlsMode] | None = None,
) -> PeerAuthentication:
    return PeerAuthentication(
        name, ns, tuple(sorted(selector.items())) if selector else None, mode, tuple(sorted((ports or {}).items()))
    )


# (id, peer authentications, workload labels, port, mode)
MODES: list[tuple[str, list[PeerAuthentication], Mapping[str, str], int, MtlsMode]] = [
    ("nothing set: PERMISSIVE", [], WEB, 8080, "PERMISSIVE"),
    ("mesh STRICT", [peer("default", "STRICT", ROOT)], WEB, 8080, "STRICT"),
    ("namespace PERMISSIVE over mesh STRICT", [peer("default", "STRICT", ROOT), peer("ns", "PERMISSIVE")], WEB, 8080,
     "PERMISSIVE"),
    ("workload STRICT over namespace", [peer("ns", "PERMISSIVE"), peer("w", "STRICT", selector={"app": "web"})], WEB,
     8080, "STRICT"),
    ("workload selector not matching", [peer("ns", "PERMISSIVE"), peer("w", "STRICT", selector={"app": "db"})], WEB,
     8080, "PERMISSIVE"),
    ("other namespace's workload policy", [peer("w", "STRICT", "other", {"app": "web"})], WEB, 8080, "PERMISSIVE"),
    ("root selector policy is not mesh-wide", [peer("w", "STRICT", ROOT, {"app": "web"})], WEB, 8080, "PERMISSIVE"),
    ("port PERMISSIVE in a STRICT workload", [peer("w", "STRICT", selector=WEB, ports={8080: "PERMISSIVE"})], WEB,
     8080, "PERMISSIVE"),
    ("other port keeps the workload's STRICT", [peer("w", "STRICT", selector=WEB, ports={8080: "PERMISSIVE"})], WEB,
     9090, "STRICT"),
    ("port STRICT in a PERMISSIVE namespace", [peer("ns", "PERMISSIVE"), peer("w", "UNSET", selector=WEB,
     ports={8080: "STRICT"})], WEB, 8080, "STRICT"),
    ("port UNSET inherits namespace", [peer("ns", "STRICT"), peer("w", "PERMISSIVE", selector=WEB,
     ports={8080: "UNSET"})], WEB, 8080, "PERMISSIVE"),
    ("workload UNSET inherits mesh", [peer("m", "STRICT", ROOT), peer("w", "UNSET", selector=WEB)], WEB, 8080,
     "STRICT"),
    ("DISABLE", [peer("ns", "DISABLE")], WEB, 8080, "DISABLE"),
]  # fmt: skip


@pytest.mark.parametrize(("auths", "labels", "port", "mode"), [m[1:] for m in MODES], ids=[m[0] for m in MODES])
def test_mtls_mode(auths: list[PeerAuthentication], labels: Mapping[str, str], port: int, mode: MtlsMode) -> None:
    held_auths = PolicySet.from_wire([], [a.to_wire() for a in auths]).peer_authentication
    assert mtls_mode(held_auths, NS, labels, port, ROOTS) == mode
    assert mtls_mode(list(reversed(auths)), NS, labels, port, ROOTS) == mode


# Random policy sets: the namespace index gives the decision a scan of every policy gives.
_policies = st.lists(
    st.builds(
        pol,
        st.sampled_from("abcdef"),
        st.sampled_from(["ALLOW", "DENY", "AUDIT"]),
        st.sampled_from([ANY, FROM_CLIENT, FROM_OTHER, L7_GET, to(ports=(8080,)), to(not_ports=(8080,))]),
        ns=st.sampled_from([NS, ROOT, "other", "zzz"]),
        selector=st.sampled_from([None, {"app": "web"}, {"app": "db"}, {"version": "v1"}]),
    ),
    max_size=8,
    unique_by=lambda p: (p.namespace, p.name),
)


@settings(database=None, max_examples=200, deadline=None)
@given(_policies, st.sampled_from([MTLS, PLAIN, OTHER_NS]), st.sampled_from([NS, ROOT, "zzz"]))
def test_the_index_decides_as_a_scan_of_every_policy(
    policies: list[AuthorizationPolicy], connection: Connection, namespace: str
) -> None:
    ordered = sorted(policies, key=lambda p: (p.namespace, p.name))
    indexed = held(policies).authorization
    assert authorize(indexed, namespace, WEB, connection, ROOTS) == authorize(
        ordered, namespace, WEB, connection, ROOTS
    )
