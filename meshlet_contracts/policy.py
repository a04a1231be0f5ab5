"""AuthorizationPolicy and PeerAuthentication in proxy-ready form: the one definition control and ztunnel share.

Control validates the user's Istio YAML (`control.model.security`) into these types and sends them with `to_wire`;
ztunnel reads them back once with `from_wire` and decides with them (`ztunnel.rbac`). The wire form
(`meshlet_contracts.config_items`) has camelCase keys and every list present, principals without `spiffe://`,
IP blocks as normalized CIDR strings and ports as numbers. The L7 parts (request principals, hosts, methods,
paths, request conditions) travel too: an L4 proxy resolves them so as to fail closed, an L7 one evaluates them.

`from_wire` is strict: an unknown field is an error rather than ignored, because a field this proxy does not
know (control being newer) could narrow an ALLOW rule, and dropping it would widen what the rule lets through.
Errors name the policy and the field, as in
`AuthorizationPolicy prod/web: rules[0].from[1].ipBlocks[2]: '10.0.0.300' is not a CIDR range`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias, cast, get_args

from meshlet_contracts.config_items import (
    AuthorizationPolicyItem,
    ConditionItem,
    ItemError,
    OperationItem,
    PeerAuthenticationItem,
    RuleItem,
    SourceItem,
    each,
    items,
    mapping,
    port,
    strings,
)
from meshlet_contracts.http_paths import is_template, valid_template

Action = Literal["ALLOW", "DENY", "AUDIT"]
MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
Selector: TypeAlias = tuple[tuple[str, str], ...]
"""matchLabels as sorted pairs; None (not an empty tuple) selects every workload."""


def selects(selector: Selector | None, labels: Mapping[str, str]) -> bool:
    """Whether a policy's (or a Service's) selector picks a workload with these labels."""
    return selector is None or all(labels.get(key) == value for key, value in selector)


Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

ACTIONS: dict[str, Action] = {a: a for a in get_args(Action)}
MODES: dict[str, MtlsMode] = {m: m for m in get_args(MtlsMode)}

L4_CONDITION_KEYS = frozenset(
    {"source.ip", "remote.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"}
)
"""Condition keys the node proxy can evaluate from the connection alone; any other key needs the HTTP request."""
IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})
"""Condition keys whose values are CIDR ranges."""


class PolicyError(ItemError):
    """A policy item does not follow the schema. `policy` is "Kind namespace/name" once known, `field` the path."""

    def __init__(self, field: str, reason: str, policy: str = "") -> None:
        super().__init__(field, reason)
        self.policy = policy
        where = ": ".join(part for part in (policy, field) if part)
        self.args = (f"{where}: {reason}" if where else reason,)


@dataclass(frozen=True, slots=True)
class Source:
    """One `from` entry. Every non-empty field must match (AND), within a field any value (OR); `not_x` fields
    match when no entry does. Principals are Istio's form without `spiffe://` (`cluster.local/ns/foo/sa/bar`);
    strings may use `*` alone or as a prefix or suffix wildcard. Request principals need a JWT (L7)."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[Network, ...] = ()
    not_ip_blocks: tuple[Network, ...] = ()
    remote_ip_blocks: tuple[Network, ...] = ()
    not_remote_ip_blocks: tuple[Network, ...] = ()

    @property
    def needs_l7(self) -> bool:
        return bool(self.request_principals or self.not_request_principals)

    def to_wire(self) -> SourceItem:
        return cast(SourceItem, {key: list(map(str, getattr(self, attr))) for key, attr in SOURCE_FIELDS.items()})

    @classmethod
    def from_wire(cls, item: object) -> Source:
        raw = known_fields(item, SOURCE_FIELDS)
        values: dict[str, Any] = {}
        for key, attr in SOURCE_FIELDS.items():
            values[attr] = _networks(raw, key) if attr.endswith("ip_blocks") else strings(raw, key)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Operation:
    """One `to` entry, matched like a Source; everything but ports needs the HTTP request."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()

    @property
    def needs_l7(self) -> bool:
        return bool(self.hosts or self.not_hosts or self.methods or self.not_methods or self.paths or self.not_paths)

    def to_wire(self) -> OperationItem:
        return cast(OperationItem, {key: list(getattr(self, attr)) for key, attr in OPERATION_FIELDS.items()})

    @classmethod
    def from_wire(cls, item: object) -> Operation:
        raw = known_fields(item, OPERATION_FIELDS)
        values: dict[str, Any] = {}
        for key, attr in OPERATION_FIELDS.items():
            values[attr] = _ports(raw, key) if attr.endswith("ports") else strings(raw, key)
            if attr.endswith("paths"):
                _check_templates(values[attr], key)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Condition:
    """One `when` entry: the attribute `key` must match one of `values` (if any) and none of `not_values`.
    For IP keys the values are normalized CIDR strings, compiled once into `networks` / `not_networks`;
    for destination.port they are port numbers as strings ("80", never "080")."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()
    networks: tuple[Network, ...] = field(init=False, default=(), repr=False)
    not_networks: tuple[Network, ...] = field(init=False, default=(), repr=False)

    def __post_init__(self) -> None:
        if self.key in IP_KEYS:
            for name, texts in (("networks", self.values), ("not_networks", self.not_values)):
                object.__setattr__(self, name, tuple(ipaddress.ip_network(t, strict=False) for t in texts))

    @property
    def needs_l7(self) -> bool:
        return self.key not in L4_CONDITION_KEYS

    def to_wire(self) -> ConditionItem:
        return {"key": self.key, "values": list(self.values), "notValues": list(self.not_values)}

    @classmethod
    def from_wire(cls, item: object) -> Condition:
        raw = known_fields(item, ("key", "values", "notValues"))
        key = raw.get("key")
        if not isinstance(key, str) or not key:
            raise PolicyError("key", f"expected a non-empty string, got {key!r}")
        if key in IP_KEYS:
            return cls(key, *(tuple(map(str, _networks(raw, name))) for name in ("values", "notValues")))
        if key == "destination.port":
            # Normalized so that "080" and "80" compare equal.
            return cls(key, *(tuple(map(str, _ports(raw, name))) for name in ("values", "notValues")))
        return cls(key, strings(raw, "values"), strings(raw, "notValues"))


@dataclass(frozen=True, slots=True)
class Rule:
    """Matches when any source, any operation and every condition match; an empty tuple matches anything,
    so the rule `{}` matches every request."""

    sources: tuple[Source, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()
    needs_l7: bool = field(init=False, default=False)
    """Whether any part needs the HTTP request; worked out once here because every connection asks."""

    def __post_init__(self) -> None:
        parts: Iterable[Source | Operation | Condition] = (*self.sources, *self.operations, *self.conditions)
        object.__setattr__(self, "needs_l7", any(part.needs_l7 for part in parts))

    def to_wire(self) -> RuleItem:
        return {
            "from": [s.to_wire() for s in self.sources],
            "to": [o.to_wire() for o in self.operations],
            "when": [c.to_wire() for c in self.conditions],
        }

    @classmethod
    def from_wire(cls, item: object) -> Rule:
        raw = known_fields(item, ("from", "to", "when"))
        return cls(
            each(raw, "from", Source.from_wire),
            each(raw, "to", Operation.from_wire),
            each(raw, "when", Condition.from_wire),
        )


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    """An AuthorizationPolicy. `selector` is None when it selects every workload of its namespace (of the mesh,
    in the root namespace). An ALLOW policy without rules matches nothing, so it denies everything it selects."""

    name: str
    namespace: str
    selector: Selector | None
    action: Action
    rules: tuple[Rule, ...]

    @property
    def ref(self) -> str:
        """`namespace/name`: its key in the config stream, and how decisions name it."""
        return f"{self.namespace}/{self.name}"

    @property
    def needs_l7(self) -> bool:
        """Whether any rule needs the HTTP request; the node proxy alone enforces only connection attributes."""
        return any(rule.needs_l7 for rule in self.rules)

    def to_wire(self) -> AuthorizationPolicyItem:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "selector": None if self.selector is None else dict(self.selector),
            "action": self.action,
            "rules": [rule.to_wire() for rule in self.rules],
            "needsL7": self.needs_l7,
        }

    @classmethod
    def from_wire(cls, item: object) -> AuthorizationPolicy:
        name, namespace, raw = identify_item(item, "AuthorizationPolicy")
        with _named(f"AuthorizationPolicy {namespace}/{name}"):
            known_fields(raw, ("name", "namespace", "selector", "action", "rules", "needsL7"))
            action = raw.get("action")
            if action not in ACTIONS:
                raise PolicyError("action", f"expected one of {', '.join(ACTIONS)}, got {action!r}")
            if not isinstance(raw.get("needsL7", False), bool):
                raise PolicyError("needsL7", f"expected a boolean, got {raw['needsL7']!r}")
            return cls(name, namespace, _selector(raw), ACTIONS[action], each(raw, "rules", Rule.from_wire))


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    """A PeerAuthentication. STRICT accepts mTLS only, PERMISSIVE plaintext too, DISABLE plaintext only; UNSET,
    as a mode or a port's mode, inherits from the next less specific policy. `port_modes` (sorted by port)
    override `mode` for those ports of the selected workloads, so only a policy with a selector has them."""

    name: str
    namespace: str
    selector: Selector | None
    mode: MtlsMode
    port_modes: tuple[tuple[int, MtlsMode], ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_wire(self) -> PeerAuthenticationItem:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "selector": None if self.selector is None else dict(self.selector),
            "mode": self.mode,
            "portModes": {str(number): mode for number, mode in self.port_modes},
        }

    @classmethod
    def from_wire(cls, item: object) -> PeerAuthentication:
        name, namespace, raw = identify_item(item, "PeerAuthentication")
        with _named(f"PeerAuthentication {namespace}/{name}"):
            known_fields(raw, ("name", "namespace", "selector", "mode", "portModes"))
            selector = _selector(raw)
            mode = _mode(raw.get("mode", "UNSET"), "mode")
            port_modes: dict[int, MtlsMode] = {}
            for number, port_mode in mapping(raw.get("portModes") or {}, "portModes").items():
                path = f"portModes.{number}"
                port_modes[port(number, path)] = _mode(port_mode, path)
            if port_modes and selector is None:
                # Control rejects this: ports belong to workloads, so only a selector policy may name them.
                raise PolicyError("portModes", "a policy without a selector cannot set port modes")
            return cls(name, namespace, selector, mode, tuple(sorted(port_modes.items())))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


SOURCE_FIELDS = {_camel(f.name): f.name for f in fields(Source)}
"""Wire (and Istio) name -> attribute: `notIpBlocks` -> `not_ip_blocks`."""
OPERATION_FIELDS = {_camel(f.name): f.name for f in fields(Operation)}


@contextmanager
def _named(policy: str) -> Iterator[None]:
    try:
        yield
    except ItemError as exc:
        raise PolicyError(exc.field, exc.reason, policy) from None


def identify_item(item: object, kind: str) -> tuple[str, str, Mapping[str, Any]]:
    """The name and namespace of an item, checked first so that every later error can name the policy."""
    if not isinstance(item, Mapping):
        raise PolicyError("", f"expected a mapping, got {type(item).__name__}", kind)
    raw: Mapping[str, Any] = item
    found = [raw.get(k) for k in ("name", "namespace")]
    for key, value in zip(("name", "namespace"), found, strict=True):
        if not isinstance(value, str) or not value:
            label = "/".join(v if isinstance(v, str) and v else "?" for v in reversed(found))
            raise PolicyError(key, f"expected a non-empty string, got {value!r}", f"{kind} {label}")
    return str(found[0]), str(found[1]), raw


def known_fields(item: object, known: Iterable[str]) -> Mapping[str, Any]:
    """`item` as a mapping with no key outside `known`."""
    raw = mapping(item, "")
    unknown = sorted(set(map(str, raw)) - set(known))
    if unknown:
        raise PolicyError(unknown[0], "unknown field; is control newer than this proxy?")
    return raw


def _networks(raw: Mapping[str, Any], key: str) -> tuple[Network, ...]:
    out = []
    for i, item in enumerate(strings(raw, key)):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise PolicyError(f"{key}[{i}]", f"{item!r} is not a CIDR range") from None
    return tuple(out)


def _check_templates(paths: tuple[str, ...], key: str) -> None:
    # Control rejects invalid templates; checked again here so that a proxy never holds one it cannot match.
    for i, path in enumerate(paths):
        error = valid_template(path) if is_template(path) else None
        if error is not None:
            raise PolicyError(f"{key}[{i}]", f"{path!r}: {error}")


def _ports(raw: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(port(item, f"{key}[{i}]") for i, item in enumerate(items(raw, key)))


def _selector(raw: Mapping[str, Any]) -> Selector | None:
    value = raw.get("selector")
    if value is None:
        return None
    for k, v in mapping(value, "selector").items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise PolicyError(f"selector.{k}", f"expected string labels, got {k!r}: {v!r}")
    # Empty labels select every workload, exactly as no selector does; control writes None for both.
    return tuple(sorted(value.items())) or None


def _mode(value: object, field: str) -> MtlsMode:
    if not isinstance(value, str) or value not in MODES:
        raise PolicyError(field, f"expected one of {', '.join(MODES)}, got {value!r}")
    return MODES[value]
