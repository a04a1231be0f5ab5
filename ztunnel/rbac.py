"""Authorization and mTLS mode at L4: pure functions of the policies and one connection, with Istio's semantics.

The node proxy sees only the connection: the peer's identity from its certificate, the addresses and the port. Parts
of a policy that need the HTTP request (request principals, hosts, methods, paths, and `when` keys other than
source.ip, remote.ip, source.namespace, source.principal, destination.ip and destination.port) cannot be checked here,
so they are resolved the way that fails closed, as Istio's ztunnel does:
- in an ALLOW policy, a rule with any such part never matches: the proxy cannot prove the request would pass it;
- in a DENY policy, such parts are ignored and the rest of the rule is matched, so the deny covers more than it
  would at L7 (a rule denying `methods: [DELETE]` from a namespace denies every connection from it).
AUDIT policies only mark requests for logging and never change a decision.

Ports where the proxy handles HTTP per request are decided by `ztunnel.l7.authz` instead, with these same
matchers for the connection's parts.

There are no proxy headers at L4, so `ipBlocks` and `remoteIpBlocks` (and `source.ip` and `remote.ip`) all compare
the connection's source address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ztunnel.state.policy import (
    AuthorizationPolicies,
    AuthorizationPolicy,
    Condition,
    MtlsMode,
    Network,
    Operation,
    PeerAuthentication,
    PeerAuthentications,
    Rule,
    Source,
    selects,
)

_SPIFFE = "spiffe://"
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Connection:
    """What the proxy knows about one connection at L4."""

    source_ip: str
    source_identity: str | None
    """The full `spiffe://td/ns/<ns>/sa/<sa>` from the peer certificate; None when the connection is plaintext."""
    dest_ip: str
    dest_port: int
    """The port the application listens on (not the HBONE port)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a connection may proceed, and why, for logs, metrics and the admin endpoint."""

    allowed: bool
    reason: str
    policy: str | None
    """`namespace/name` of the policy that decided, or None when no single policy did."""
    audit: bool = False
    """Whether an AUDIT policy matched, so the request should be logged as audited (L7 decisions only)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A connection's attributes in the form rules compare them, worked out once per decision."""

    principal: str
    namespace: str
    source_ip: _Address
    dest_ip: _Address
    dest_port: int

    @classmethod
    def of(cls, conn: Connection) -> Peer:
        # Plaintext has no principal and no namespace: "" is matched by no pattern, not even "*", as in Istio.
        principal = (conn.source_identity or "").removeprefix(_SPIFFE)
        parts = principal.split("/")
        namespace = parts[2] if len(parts) >= 3 and parts[1] == "ns" else ""
        return cls(principal, namespace, _address(conn.source_ip), _address(conn.dest_ip), conn.dest_port)


def _address(text: str) -> _Address:
    address = ipaddress.ip_address(text)
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d, which no IPv4 block would contain.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def applicable(
    policies: Iterable[AuthorizationPolicy], namespace: str, labels: Mapping[str, str], roots: tuple[str, ...]
) -> list[AuthorizationPolicy]:
    """The policies that apply to a workload: those of its namespace whose selector (if any) matches its labels,
    and those of the root namespaces (`roots`) without a selector or with one matching its labels. A config version's
    `AuthorizationPolicies` answer from their namespace index (sorted by `namespace/name`); any other iterable
    is scanned and keeps the order given."""
    if isinstance(policies, AuthorizationPolicies):
        return policies.applicable(namespace, labels, roots)
    return [p for p in policies if (p.namespace == namespace or p.namespace in roots) and selects(p.selector, labels)]


def selects_by_label(policies: Iterable[AuthorizationPolicy], namespace: str, roots: tuple[str, ...]) -> bool:
    """Whether a workload's labels decide which of `policies` apply to it: some policy of its namespace, or of a
    root namespace, selects workloads by label. Then a workload whose labels are unknown cannot be authorized."""
    return any(p.selector and (p.namespace == namespace or p.namespace in roots) for p in policies)


UNKNOWN_LABELS = "its labels, which a policy selects by, are unknown: the pod is not in this ztunnel's config yet"
"""Why a connection to a served pod that control has not told this ztunnel about yet is refused (fail closed)."""


def unknown_workload(
    known: bool, policies: Iterable[AuthorizationPolicy], namespace: str, roots: tuple[str, ...]
) -> Decision | None:
    """The refusal for a served pod control's config does not name yet (the agent handed it over first) where its
    labels decide (`selects_by_label`): without them a DENY policy selecting it would not match. None otherwise:
    decide as usual. Both connect-time checks (L4 and L7) start here."""
    if known or not selects_by_label(policies, namespace, roots):
        return None
    return Decision(False, UNKNOWN_LABELS, None)


def authorize(
    policies: Sequence[AuthorizationPolicy],
    namespace: str,
    labels: Mapping[str, str],
    conn: Connection,
    roots: tuple[str, ...],
) -> Decision:
    """Whether `conn` may reach the workload (`namespace`, `labels`): any matching DENY policy denies; otherwise,
    if no ALLOW policy applies, the connection is allowed, else it is allowed only if some ALLOW policy matches."""
    peer = Peer.of(conn)
    selected = applicable(policies, namespace, labels, roots)
    for policy in selected:
        if policy.action == "DENY" and any(_rule_matches(rule, peer) for rule in policy.rules):
            return Decision(False, f"denied by DENY policy {policy.ref}", policy.ref)
    allows = [policy for policy in selected if policy.action == "ALLOW"]
    if not allows:
        return Decision(True, "no ALLOW policy selects this workload", None)
    for policy in allows:
        if any(not rule.needs_l7 and _rule_matches(rule, peer) for rule in policy.rules):
            return Decision(True, f"allowed by ALLOW policy {policy.ref}", policy.ref)
    names = ", ".join(policy.ref for policy in allows)
    return Decision(False, f"no ALLOW policy matched ({names} select this workload)", None)


def mtls_mode(
    peer_auths: Iterable[PeerAuthentication],
    namespace: str,
    labels: Mapping[str, str],
    port: int,
    roots: tuple[str, ...],
) -> MtlsMode:
    """The mTLS mode ("STRICT", "PERMISSIVE" or "DISABLE") for inbound connections to `port` of a workload.

    The most specific policy wins: one in the workload's namespace selecting it (its entry for `port`, if any,
    before its mode), then the namespace-wide one, then the mesh-wide ones (each root namespace's, no selector,
    in the roots' order). UNSET defers to the next of these, and PERMISSIVE applies when none sets
    a mode. Istio breaks ties between policies of one level by age, which the wire does not carry; here the first
    by name wins, which is at least stable."""
    if not isinstance(peer_auths, PeerAuthentications):
        peer_auths = PeerAuthentications(tuple(peer_auths))
    workload, namespace_wide, mesh_wide = peer_auths.levels(namespace, labels, roots)
    modes: list[MtlsMode] = []
    if workload is not None:
        modes.extend(mode for p, mode in workload.port_modes if p == port)
        modes.append(workload.mode)
    if namespace_wide is not None:
        modes.append(namespace_wide.mode)
    modes.extend(p.mode for p in mesh_wide)
    return next((mode for mode in modes if mode != "UNSET"), "PERMISSIVE")


def _rule_matches(rule: Rule, peer: Peer) -> bool:
    """Whether the L4 parts of `rule` match; callers decide what the L7 parts mean (see the module docstring)."""
    return (
        (not rule.sources or any(source_matches(s, peer) for s in rule.sources))
        and (not rule.operations or any(operation_matches(o, peer) for o in rule.operations))
        and all(condition_matches(c, peer) for c in rule.conditions)
    )


def source_matches(source: Source, peer: Peer) -> bool:
    """Whether the L4 fields of one `from` entry match (request principals are left to the caller)."""
    remote = source.remote_ip_blocks, source.not_remote_ip_blocks
    return (
        field_matches(source.principals, source.not_principals, lambda p: string_matches(p, peer.principal))
        and field_matches(source.namespaces, source.not_namespaces, lambda n: string_matches(n, peer.namespace))
        and field_matches(source.ip_blocks, source.not_ip_blocks, lambda net: _contains(net, peer.source_ip))
        and field_matches(*remote, lambda net: _contains(net, peer.source_ip))
    )


def operation_matches(operation: Operation, peer: Peer) -> bool:
    """Whether the ports of one `to` entry match (its HTTP fields are left to the caller)."""
    return field_matches(operation.ports, operation.not_ports, lambda port: port == peer.dest_port)


def condition_matches(condition: Condition, peer: Peer) -> bool:
    """Whether a `when` entry with an L4 key matches; True for any other key (see `_rule_matches`)."""
    key = condition.key
    if key in ("source.ip", "remote.ip", "destination.ip"):
        address = peer.dest_ip if key == "destination.ip" else peer.source_ip
        return field_matches(condition.networks, condition.not_networks, lambda net: _contains(net, address))
    if key in ("source.principal", "source.namespace"):
        value = peer.principal if key == "source.principal" else peer.namespace
        return field_matches(condition.values, condition.not_values, lambda v: string_matches(v, value))
    if key == "destination.port":
        port = str(peer.dest_port)
        return field_matches(condition.values, condition.not_values, lambda v: v == port)
    return True  # needs the request: an ALLOW rule with it never gets here, a DENY rule ignores it


def field_matches(values: tuple[T, ...], not_values: tuple[T, ...], matches: Callable[[T], bool]) -> bool:
    """One field of a source, operation or condition: empty `values` match anything, else one must match; then
    no entry of `not_values` may match."""
    return (not values or any(map(matches, values))) and not any(map(matches, not_values))


def _contains(network: Network, address: _Address) -> bool:
    # An IPv4 address is in no IPv6 network and the reverse; `in` says so rather than raising.
    return address in network


def string_matches(pattern: str, value: str) -> bool:
    """Istio's string match: `*` alone matches any non-empty value, `*suffix` and `prefix*` match the end or the
    start, anything else must be equal."""
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern
