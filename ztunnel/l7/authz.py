"""Authorization per HTTP request, with Istio's semantics: pure functions of the policies, the connection and
one request.

Where the proxy handles HTTP (`has_http_rules` says for which ports), it decides twice:
- `authorize_connection` when the connection arrives refuses only what every request on it would be refused: a
  DENY rule whose parts all match without looking at a request, or ALLOW policies none of whose rules can match;
- `authorize_request` decides each request, as Istio does: any matching DENY policy denies; else, if no ALLOW
  policy applies, the request is allowed; else it is allowed only if some ALLOW policy matches. A matching
  AUDIT policy sets `Decision.audit` and changes nothing else.

The connection's parts (principals, namespaces, IP blocks, ports, L4 `when` keys) are matched by
`ztunnel.rbac`'s matchers. The request's parts follow Istio:
- `hosts` compare the Host header as sent, case-insensitively and port included: `example.com` does not match
  `example.com:8080`, so a policy lists `example.com:*` as well (Istio's security best practices on hosts);
- `methods` compare the method exactly (case-sensitive); `paths` the normalized path (`ztunnel.l7.paths`);
- `request.headers[name]`: the name is case-insensitive; repeated headers are joined with "," into one value,
  as Istio's normalization page says; an absent header matches no value, so only `notValues` can match it;
- every string field takes Istio's exact, `prefix*`, `*suffix` and `*` (non-empty) forms; for a header `*`
  matches any present header (Envoy's presence match), even an empty one.
Some parts cannot be evaluated here, and are resolved so as to fail closed: request principals and the
`request.auth.*` keys (meshlet has no RequestAuthentication, so no JWT is ever validated), condition keys this
proxy does not know, and `paths` when the request's path cannot be normalized. Such a part never matches in an
ALLOW rule, so the rule never allows; in a DENY rule it counts as matching, so the rest of the rule decides and
the deny covers more, never less, than Istio's would; in an AUDIT rule it matches too (audit more, not less).
`connection.sni` is known to be absent (the proxy sees plaintext HTTP): its `values` never match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshlet_contracts.policy import L4_CONDITION_KEYS, AuthorizationPolicy, Condition, Operation, Rule, Source
from ztunnel.l7.paths import normalize, path_matches
from ztunnel.rbac import (
    Connection,
    Decision,
    Peer,
    applicable,
    condition_matches,
    field_matches,
    operation_matches,
    source_matches,
    string_matches,
)

__all__ = ["Request", "authorize_connection", "authorize_request", "has_http_rules"]

Tri = bool | None
"""A match result; None means "depends on the request" and occurs only at connect time."""

_HEADER_KEY = "request.headers["


@dataclass(frozen=True, slots=True)
class Request:
    """What authorization needs from one HTTP request."""

    method: str
    path: str
    """The request target as received (origin-form, maybe with a query), not yet normalized."""
    host: str
    """The Host header (or :authority), possibly with a port; "" when the request has none."""
    headers: Mapping[str, tuple[str, ...]]
    """Lowercase header names to their values, in the order received."""


@dataclass(frozen=True, slots=True)
class _Context:
    """One evaluation: the connection, the request (None at connect time), and what an unevaluable part means."""

    peer: Peer
    request: Request | None
    path: str | None
    """The normalized path; None when it cannot be normalized (or there is no request)."""
    unknown: bool
    """The value of a part that cannot be evaluated: False in ALLOW rules, True in DENY and AUDIT rules."""

    @classmethod
    def of(cls, peer: Peer, request: Request | None, unknown: bool) -> _Context:
        return cls(peer, request, None if request is None else normalize(request.path), unknown)


def authorize_request(
    policies: Iterable[AuthorizationPolicy],
    namespace: str,
    labels: Mapping[str, str],
    conn: Connection,
    request: Request,
    roots: tuple[str, ...],
    peer: Peer | None = None,
) -> Decision:
    """Whether `request`, arriving on `conn`, may reach the workload (`namespace`, `labels`); `audit` is set
    when an AUDIT policy matches it. `peer` is `Peer.of(conn)` when the caller keeps it (one per connection:
    parsing its addresses is most of the cost of a decision)."""
    peer = peer if peer is not None else Peer.of(conn)
    selected = applicable(policies, namespace, labels, roots)
    strict, lenient = _Context.of(peer, request, False), _Context.of(peer, request, True)
    audit = any(_policy_matches(p, lenient) is True for p in selected if p.action == "AUDIT")
    for policy in selected:
        if policy.action == "DENY" and _policy_matches(policy, lenient) is True:
            return Decision(False, f"denied by DENY policy {policy.ref}", policy.ref, audit)
    allows = [policy for policy in selected if policy.action == "ALLOW"]
    if not allows:
        return Decision(True, "no ALLOW policy selects this workload", None, audit)
    for policy in allows:
        if _policy_matches(policy, strict) is True:
            return Decision(True, f"allowed by ALLOW policy {policy.ref}", policy.ref, audit)
    names = ", ".join(policy.ref for policy in allows)
    return Decision(False, f"no ALLOW policy matched ({names} select this workload)", None, audit)


def authorize_connection(
    policies: Iterable[AuthorizationPolicy],
    namespace: str,
    labels: Mapping[str, str],
    conn: Connection,
    roots: tuple[str, ...],
) -> Decision:
    """The connect-time check for a destination that authorizes each request: deny `conn` only when every
    request on it would be denied, leaving everything that depends on a request to `authorize_request`."""
    peer = Peer.of(conn)
    selected = applicable(policies, namespace, labels, roots)
    for policy in selected:
        if policy.action == "DENY" and _policy_matches(policy, _Context.of(peer, None, True)) is True:
            return Decision(False, f"denied by DENY policy {policy.ref}", policy.ref)
    allows = [policy for policy in selected if policy.action == "ALLOW"]
    if not allows:
        return Decision(True, "no ALLOW policy selects this workload", None)
    strict = _Context.of(peer, None, False)
    for policy in allows:
        result = _policy_matches(policy, strict)
        if result is True:
            return Decision(True, f"allowed by ALLOW policy {policy.ref}", policy.ref)
        if result is None:
            return Decision(True, f"ALLOW policy {policy.ref} may allow requests; each is checked", policy.ref)
    names = ", ".join(policy.ref for policy in allows)
    return Decision(False, f"no ALLOW policy matched ({names} select this workload)", None)


def has_http_rules(
    policies: Iterable[AuthorizationPolicy],
    namespace: str,
    labels: Mapping[str, str],
    port: int,
    roots: tuple[str, ...],
) -> bool:
    """Whether an ALLOW or DENY policy applying to the workload has a rule that looks at the HTTP request
    (hosts, methods, paths or a `request.headers` condition) and can apply to destination port `port`: then
    connections to that port must be handled per request. AUDIT policies alone do not make a port HTTP."""
    for policy in applicable(policies, namespace, labels, roots):
        if policy.action in ("ALLOW", "DENY") and any(_rule_needs_request(rule, port) for rule in policy.rules):
            return True
    return False


def _rule_needs_request(rule: Rule, port: int) -> bool:
    operations = [o for o in rule.operations if field_matches(o.ports, o.not_ports, lambda p: p == port)]
    if rule.operations and not operations:
        return False  # the rule never applies to this port
    return any(map(_operation_needs_request, operations)) or any(c.key.startswith(_HEADER_KEY) for c in rule.conditions)


def _operation_needs_request(operation: Operation) -> bool:
    return any(
        (operation.hosts, operation.not_hosts, operation.methods, operation.not_methods)
        + (operation.paths, operation.not_paths)
    )


def _policy_matches(policy: AuthorizationPolicy, ctx: _Context) -> Tri:
    return _any(_rule_matches(rule, ctx) for rule in policy.rules)


def _rule_matches(rule: Rule, ctx: _Context) -> Tri:
    """Istio: a rule matches when one source, one operation and every condition match; absent lists match."""
    sources = _any(_source_matches(s, ctx) for s in rule.sources) if rule.sources else True
    if sources is False:
        return False
    operations = _any(_operation_matches(o, ctx) for o in rule.operations) if rule.operations else True
    if operations is False:
        return False
    return _all((sources, operations, _all(_condition_matches(c, ctx) for c in rule.conditions)))


def _source_matches(source: Source, ctx: _Context) -> Tri:
    if not source_matches(source, ctx.peer):
        return False
    # Request principals come from a validated JWT, which meshlet never has: fail closed (module docstring).
    return ctx.unknown if source.request_principals or source.not_request_principals else True


def _operation_matches(operation: Operation, ctx: _Context) -> Tri:
    if not operation_matches(operation, ctx.peer):
        return False
    request = ctx.request
    if request is None:
        return None if _operation_needs_request(operation) else True
    host = request.host.lower()
    hosts = field_matches(operation.hosts, operation.not_hosts, lambda h: string_matches(h.lower(), host))
    methods = field_matches(operation.methods, operation.not_methods, lambda m: string_matches(m, request.method))
    if not (hosts and methods):
        return False
    if not (operation.paths or operation.not_paths):
        return True
    path = ctx.path
    if path is None:
        return ctx.unknown
    return field_matches(operation.paths, operation.not_paths, lambda p: path_matches(p, path))


def _condition_matches(condition: Condition, ctx: _Context) -> Tri:
    key = condition.key
    if key in L4_CONDITION_KEYS:
        return condition_matches(condition, ctx.peer)
    if key == "connection.sni":
        # No SNI on plaintext HTTP: "" is matched by no pattern, so `values` never match and `notValues` never
        # exclude.
        return field_matches(condition.values, condition.not_values, lambda v: string_matches(v, ""))
    if key.startswith(_HEADER_KEY) and key.endswith("]"):
        if ctx.request is None:
            return None
        value = _header(ctx.request, key[len(_HEADER_KEY) : -1].lower())
        return field_matches(condition.values, condition.not_values, lambda v: _header_matches(v, value))
    return ctx.unknown  # request.auth.*, experimental.* or a key this proxy does not know


def _header(request: Request, name: str) -> str | None:
    """The value of header `name` as Istio compares it: repeated headers joined with ",". Pseudo-headers
    name the request line's parts, as they do in Envoy."""
    values = request.headers.get(name)
    if values:
        return ",".join(values)
    if name in (":authority", "host"):
        return request.host or None
    if name == ":method":
        return request.method
    if name == ":path":
        return request.path
    return None


def _header_matches(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    return pattern == "*" or string_matches(pattern, value)


def _any(results: Iterable[Tri]) -> Tri:
    """Kleene OR: True if one is True, else None if one is None, else False."""
    out: Tri = False
    for result in results:
        if result is True:
            return True
        if result is None:
            out = None
    return out


def _all(results: Iterable[Tri]) -> Tri:
    """Kleene AND: False if one is False, else None if one is None, else True."""
    out: Tri = True
    for result in results:
        if result is False:
            return False
        if result is None:
            out = None
    return out
