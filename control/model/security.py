"""AuthorizationPolicy and PeerAuthentication: raw Kubernetes objects checked and converted into the shared
proxy-ready types of `meshlet_contracts.policy` (which ztunnel reads back from the wire).

The schema and semantics are Istio's `security.istio.io/v1`, so existing policies carry over unchanged. Validation
is strict: an unknown field is an error rather than ignored, because a typo such as `notPrincipal` would otherwise
be dropped and silently widen a policy. Every error names the offending field by its full path, for example
`spec.rules[0].from[1].source.ipBlocks[2]: '10.0.0.300' is not an IP address or CIDR range`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from control.model.fields import (
    ObjectKey,
    fail,
    labels,
    opt_list,
    opt_map,
    opt_str,
    port_number,
    req_str,
    str_list,
    typed_key,
)
from control.model.nested import check_fields, each, mapping, within
from meshlet_contracts import policy
from meshlet_contracts.http_paths import is_template, valid_template
from meshlet_contracts.policy import (
    ACTIONS,
    IP_KEYS,
    L4_CONDITION_KEYS,
    MODES,
    OPERATION_FIELDS,
    SOURCE_FIELDS,
    Action,
    Condition,
    MtlsMode,
    Operation,
    Rule,
    Selector,
    Source,
)

__all__ = [
    "API_VERSIONS",
    "L4_CONDITION_KEYS",
    "Action",
    "AuthorizationPolicy",
    "Condition",
    "MtlsMode",
    "Operation",
    "PeerAuthentication",
    "Rule",
    "Selector",
    "Source",
]

API_VERSIONS = ("security.meshlet.io/v1", "security.istio.io/v1", "security.istio.io/v1beta1")

_EXACT_KEYS = L4_CONDITION_KEYS | {
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "connection.sni",
}
# Map-valued keys name their entry in brackets; claims may nest (`request.auth.claims[groups][0]`).
_MAP_KEYS = re.compile(
    r"request\.headers\[[^\[\]]+\]|request\.auth\.claims(\[[^\[\]]+\])+|experimental\.envoy\.filters\.[^\[]+\[.+\]"
)
# Keys Istio once had: say what replaced them rather than just "unknown".
_RETIRED_KEYS = {
    "destination.namespace": "is implied by the policy's metadata.namespace",
    "destination.labels": "is replaced by spec.selector",
    "destination.name": "is no longer supported (Istio dropped it after v1alpha1)",
    "destination.user": "is no longer supported (Istio dropped it after v1alpha1)",
}
# Everything a peer identity (hence a principal or namespace compared with it) can hold: printable ASCII, no
# space. A value with a newline, a NUL or a Cyrillic 'е' could never match, so a DENY naming it would deny
# nothing; it is refused here instead.
_IDENTITY_TEXT = re.compile(r"[!-~]+")
_IDENTITY_EXAMPLES = {"principal": "cluster.local/ns/default/sa/sleep", "namespace": "default"}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy(policy.AuthorizationPolicy):
    """The shared AuthorizationPolicy as the store holds it: `from_k8s` validates, `key` names it among objects.
    `rules` is empty both when absent and when `[]`: no rule matches then, so an ALLOW policy without rules
    denies everything it selects."""

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> AuthorizationPolicy:
        key = _policy_key(obj, "AuthorizationPolicy")
        spec = opt_map(obj, "spec")
        with within("spec"):
            check_fields(spec, ("selector", "targetRef", "targetRefs", "action", "provider", "rules"))
            for name in ("targetRef", "targetRefs"):
                if spec.get(name) is not None:
                    fail(name, "not supported; use selector")
            selector = _selector(spec)
            action = _action(spec)
            rules = each(spec, "rules", _rule)
            if action == "DENY" and not rules:
                # Istio rejects this too: the author almost certainly meant "deny everything", which it is not.
                fail("rules", "a DENY policy without rules never matches; add an empty rule {} to deny every request")
            return cls(key.name, key.namespace, selector, action, rules)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("AuthorizationPolicy", self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class PeerAuthentication(policy.PeerAuthentication):
    """The shared PeerAuthentication as the store holds it: `from_k8s` validates, `key` names it among objects."""

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> PeerAuthentication:
        key = _policy_key(obj, "PeerAuthentication")
        spec = opt_map(obj, "spec")
        with within("spec"):
            check_fields(spec, ("selector", "mtls", "portLevelMtls"))
            selector = _selector(spec)
            mode = _mode(spec.get("mtls"), "mtls")
            port_modes: dict[int, MtlsMode] = {}
            if spec.get("portLevelMtls") is not None:
                # As in Istio: ports are a property of workloads, so a namespace-wide policy cannot name them.
                if selector is None:
                    fail("portLevelMtls", "needs a selector: port-level mTLS applies to selected workloads only")
                raw_ports = opt_map(spec, "portLevelMtls")
                if not raw_ports:
                    fail("portLevelMtls", "must not be empty; remove it to use the workload-wide mode")
                # YAML reads `8080:` as an int key and `"8080":` as a string one; both name the same port.
                for raw_port, raw_mtls in raw_ports.items():
                    path = f"portLevelMtls.{raw_port}"
                    port = port_number(raw_port, path)
                    if port in port_modes:
                        fail(path, f"port {port} is listed twice")
                    port_modes[port] = _mode(raw_mtls, path)
            return cls(key.name, key.namespace, selector, mode, tuple(sorted(port_modes.items())))

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("PeerAuthentication", self.namespace, self.name)


def _policy_key(obj: Mapping[str, Any], kind: str) -> ObjectKey:
    """The key of a raw security object, after checking its apiVersion and kind."""
    return typed_key(obj, kind, API_VERSIONS)


def _selector(spec: Mapping[str, Any]) -> Selector | None:
    """`spec.selector.matchLabels` as sorted pairs, or None when the object selects every workload."""
    with within("selector"):
        check_fields(opt_map(spec, "selector"), ("matchLabels",))
    # Empty matchLabels select every workload, exactly like no selector (as in Istio).
    return tuple(sorted(labels(spec, "selector.matchLabels").items())) or None


def _action(spec: Mapping[str, Any]) -> Action:
    name = opt_str(spec, "action", "ALLOW")
    if name == "CUSTOM":
        fail("action", "CUSTOM (external authorization) is not supported; use ALLOW, DENY or AUDIT")
    if name not in ACTIONS:
        fail("action", f"unknown action {name!r}; expected one of ALLOW, DENY, AUDIT")
    if spec.get("provider") is not None:
        fail("provider", "not supported: a provider serves CUSTOM (external authorization), which meshlet lacks")
    return ACTIONS[name]


def _mode(value: object, path: str) -> MtlsMode:
    """The `mode` of an `mtls` object or of one port's entry; absent means UNSET."""
    raw = mapping({} if value is None else value, path)
    with within(path):
        check_fields(raw, ("mode",))
        name = opt_str(raw, "mode", "UNSET")
        if name not in MODES:
            fail("mode", f"unknown mode {name!r}; expected one of {', '.join(MODES)}")
    return MODES[name]


def _rule(raw: Mapping[str, Any]) -> Rule:
    check_fields(raw, ("from", "to", "when"))
    for name, what in (("from", "source"), ("to", "operation")):
        # Istio rejects these as ambiguous: `from: []` might mean "no source" as well as "any source".
        if raw.get(name) == []:
            fail(name, f"must not be empty; remove `{name}` to match any {what}")
    sources = each(raw, "from", lambda entry: _wrapped(entry, "source", _source))
    operations = each(raw, "to", lambda entry: _wrapped(entry, "operation", _operation))
    return Rule(sources, operations, each(raw, "when", _condition))


def _wrapped(entry: Mapping[str, Any], name: str, parse: Callable[[Mapping[str, Any]], T]) -> T:
    """The one object under `name` in a `from` or `to` entry ({source: ...} or {operation: ...})."""
    check_fields(entry, (name,))
    inner = opt_map(entry, name)
    if not inner:
        # An empty source would match anything; Istio rejects it rather than guess what was meant.
        example = "source: {namespaces: [foo]}" if name == "source" else 'operation: {ports: ["8080"]}'
        fail(
            name,
            f"{'required' if name not in entry else 'must not be empty'}: give at least one field, as in {example}",
        )
    with within(name):
        return parse(inner)


def _source(raw: Mapping[str, Any]) -> Source:
    check_fields(raw, SOURCE_FIELDS)
    values: dict[str, tuple[Any, ...]] = {}
    for name, attr in SOURCE_FIELDS.items():
        items = _strings(raw, name)
        if attr.endswith("ip_blocks"):
            values[attr] = tuple(ipaddress.ip_network(_cidr(item, f"{name}[{i}]")) for i, item in enumerate(items))
            continue
        for i, item in enumerate(items):
            _check_wildcard(item, f"{name}[{i}]")
            if attr.endswith("principals"):
                _check_principal(item, f"{name}[{i}]")
            if attr in ("principals", "not_principals", "namespaces", "not_namespaces"):
                _check_identity_text(item, f"{name}[{i}]", "namespace" if "namespace" in attr else "principal")
        values[attr] = items
    return Source(**values)


def _operation(raw: Mapping[str, Any]) -> Operation:
    check_fields(raw, OPERATION_FIELDS)
    strings: dict[str, tuple[str, ...]] = {}
    for name in ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"):
        strings[name] = _strings(raw, name)
        for i, item in enumerate(strings[name]):
            if name.lower().endswith("paths") and is_template(item):
                _check_path_template(item, f"{name}[{i}]")
            else:
                _check_wildcard(item, f"{name}[{i}]")
    # Istio writes ports as strings of digits; YAML authors often write plain integers, so both are accepted.
    ports = {
        name: tuple(port_number(p, f"{name}[{i}]") for i, p in enumerate(opt_list(raw, name)))
        for name in ("ports", "notPorts")
    }
    return Operation(
        hosts=strings["hosts"],
        not_hosts=strings["notHosts"],
        ports=ports["ports"],
        not_ports=ports["notPorts"],
        methods=strings["methods"],
        not_methods=strings["notMethods"],
        paths=strings["paths"],
        not_paths=strings["notPaths"],
    )


def _condition(raw: Mapping[str, Any]) -> Condition:
    check_fields(raw, ("key", "values", "notValues"))
    key = req_str(raw, "key")
    _check_condition_key(key)
    values = {name: _strings(raw, name) for name in ("values", "notValues")}
    if not values["values"] and not values["notValues"]:
        fail("values", f"condition {key!r} needs values or notValues")
    for name, items in values.items():
        if key in IP_KEYS:
            values[name] = tuple(_cidr(item, f"{name}[{i}]") for i, item in enumerate(items))
        elif key == "destination.port":
            values[name] = tuple(str(port_number(item, f"{name}[{i}]")) for i, item in enumerate(items))
        elif key in ("source.principal", "source.namespace"):
            for i, item in enumerate(items):
                _check_wildcard(item, f"{name}[{i}]")
                _check_identity_text(item, f"{name}[{i}]", key.removeprefix("source."))
                if key == "source.principal":
                    _check_principal(item, f"{name}[{i}]")
    return Condition(key, values["values"], values["notValues"])


def _check_condition_key(key: str) -> None:
    if key in _EXACT_KEYS or _MAP_KEYS.fullmatch(key):
        return
    retired = _RETIRED_KEYS.get(key.partition("[")[0])
    if retired:
        fail("key", f"condition key {key!r} {retired}")
    if key.startswith(("request.headers", "request.auth.claims", "experimental.envoy.filters.")):
        fail("key", f"condition key {key!r} must name its entry in brackets, as in request.headers[User-Agent]")
    supported = ", ".join([*sorted(_EXACT_KEYS), "request.headers[...]", "request.auth.claims[...]"])
    fail("key", f"unknown condition key {key!r}; supported keys: {supported}, experimental.envoy.filters.*[...]")


def _strings(raw: Mapping[str, Any], name: str) -> tuple[str, ...]:
    items = str_list(raw, name)
    for i, item in enumerate(items):
        if not item:
            fail(f"{name}[{i}]", "must not be empty")
    return items


def _check_wildcard(value: str, field: str) -> None:
    """Istio matches `*` alone (any value), `*suffix`, `prefix*`, and everything else literally; a `*`
    anywhere else would be compared literally, so such a value almost certainly never matches."""
    core = value[1:] if value.startswith("*") else value[:-1] if value.endswith("*") else value
    if "*" in core:
        fail(field, f"{value!r}: '*' is allowed only alone or at the very start or end (suffix or prefix match)")


def _check_principal(principal: str, field: str) -> None:
    if principal.startswith("spiffe://"):
        # The spiffe:// scheme is added when matching; written here it would never match.
        fail(field, f"{principal!r}: write principals without 'spiffe://', as in cluster.local/ns/default/sa/sleep")


def _check_identity_text(value: str, field: str, what: str) -> None:
    if not _IDENTITY_TEXT.fullmatch(value):
        fail(
            field,
            f"{value!r}: a {what} is printable ASCII without spaces (as in {_IDENTITY_EXAMPLES[what]}); "
            "no peer identity could match this",
        )


def _check_path_template(path: str, field: str) -> None:
    # The grammar is shared with ztunnel, which matches requests with it: both must read a template alike.
    error = valid_template(path)
    if error is not None:
        fail(field, f"{path!r}: {error}")


def _cidr(value: str, field: str) -> str:
    """An IP address or CIDR range as a CIDR string with host bits cleared (10.1.2.3 -> 10.1.2.3/32)."""
    _, slash, length = value.partition("/")
    try:
        if slash and not length.isdigit():
            raise ValueError(value)  # ipaddress also takes a netmask after the slash; Istio does not
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        fail(field, f"{value!r} is not an IP address or CIDR range (such as 10.1.2.3, 10.0.0.0/16 or 2001:db8::/32)")
