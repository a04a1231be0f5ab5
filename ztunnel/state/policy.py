"""AuthorizationPolicy and PeerAuthentication as the node proxy holds them, converted once from control's wire items.

The wire form is what `control.model.security` writes with `to_wire`: camelCase keys, every list present, principals
without `spiffe://`, IP blocks as normalized CIDR strings. Conversion precompiles IP blocks into `ipaddress` networks
and works out which rules need the HTTP request, so matching a connection (`ztunnel.rbac`) parses nothing.

Conversion is strict, as control's validation is: an unknown field is an error rather than ignored, because a field
this proxy does not know (control being newer) could narrow an ALLOW rule, and dropping it would widen what the rule
lets through. Errors name the policy and the field, as in
`AuthorizationPolicy prod/web: rules[0].from[1].ipBlocks[2]: '10.0.0.300' is not a CIDR range`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias, TypeVar, get_args

Action = Literal["ALLOW", "DENY", "AUDIT"]
MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
Selector: TypeAlias = tuple[tuple[str, str], ...]
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_ACTIONS: dict[str, Action] = {a: a for a in get_args(Action)}
_MODES: dict[str, MtlsMode] = {m: m for m in get_args(MtlsMode)}

# Condition keys the node proxy can evaluate from the connection alone; any other key needs the HTTP request.
L4_CONDITION_KEYS = frozenset(
    {"source.ip", "remote.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"}
)
_IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})

T = TypeVar("T")


class PolicyError(ValueError):
    """A wire item does not follow the schema. `policy` is "Kind namespace/name" once known, `field` the path."""

    def __init__(self, field: str, reason: str, policy: str = "") -> None:
        self.field = field
        self.reason = reason
        self.policy = policy
        where = ": ".join(part for part in (policy, field) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass(frozen=True, slots=True)
class Source:
    """One `from` entry. Every non-empty field must match (AND), within a field any value (OR); `not_x` fields
    match when no entry does. Request principals need a JWT, so only an L7 proxy can check them."""

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

    @classmethod
    def from_wire(cls, item: object) -> Source:
        raw = _mapping(item, "")
        _check_keys(raw, _SOURCE_KEYS)
        return cls(
            principals=_strings(raw, "principals"),
            not_principals=_strings(raw, "notPrincipals"),
            request_principals=_strings(raw, "requestPrincipals"),
            not_request_principals=_strings(raw, "notRequestPrincipals"),
            namespaces=_strings(raw, "namespaces"),
            not_namespaces=_strings(raw, "notNamespaces"),
            ip_blocks=_networks(raw, "ipBlocks"),
            not_ip_blocks=_networks(raw, "notIpBlocks"),
            remote_ip_blocks=_networks(raw, "remoteIpBlocks"),
            not_remote_ip_blocks=_networks(raw, "notRemoteIpBlocks"),
        )


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

    @classmethod
    def from_wire(cls, item: object) -> Operation:
        raw = _mapping(item, "")
        _check_keys(raw, _OPERATION_KEYS)
        return cls(
            hosts=_strings(raw, "hosts"),
            not_hosts=_strings(raw, "notHosts"),
            ports=_ports(raw, "ports"),
            not_ports=_ports(raw, "notPorts"),
            methods=_strings(raw, "methods"),
            not_methods=_strings(raw, "notMethods"),
            paths=_strings(raw, "paths"),
            not_paths=_strings(raw, "notPaths"),
        )


@dataclass(frozen=True, slots=True)
class Condition:
    """One `when` entry: the attribute `key` must match one of `values` (if any) and none of `not_values`.
    For IP keys the values are CIDR strings and `networks` / `not_networks` hold them compiled."""

    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    not_networks: tuple[Network, ...] = ()

    @property
    def needs_l7(self) -> bool:
        return self.key not in L4_CONDITION_KEYS

    @classmethod
    def from_wire(cls, item: object) -> Condition:
        raw = _mapping(item, "")
        _check_keys(raw, ("key", "values", "notValues"))
        key = raw.get("key")
        if not isinstance(key, str) or not key:
            raise PolicyError("key", f"expected a non-empty string, got {key!r}")
        if key in _IP_KEYS:
            nets, not_nets = _networks(raw, "values"), _networks(raw, "notValues")
            return cls(key, tuple(map(str, nets)), tuple(map(str, not_nets)), nets, not_nets)
        if key == "destination.port":
            # Kept as strings of digits, normalized so that "080" and "80" compare equal.
            values, not_values = _ports(raw, "values"), _ports(raw, "notValues")
            return cls(key, tuple(map(str, values)), tuple(map(str, not_values)))
        return cls(key, _strings(raw, "values"), _strings(raw, "notValues"))


@dataclass(frozen=True, slots=True)
class Rule:
    """Matches when any source, any operation and every condition match; an empty tuple matches anything."""

    sources: tuple[Source, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()
    needs_l7: bool = field(init=False)
    """Whether any part needs the HTTP request; worked out once here because every connection asks."""

    def __post_init__(self) -> None:
        parts: Iterable[Source | Operation | Condition] = (*self.sources, *self.operations, *self.conditions)
        object.__setattr__(self, "needs_l7", any(part.needs_l7 for part in parts))

    @classmethod
    def from_wire(cls, item: object) -> Rule:
        raw = _mapping(item, "")
        _check_keys(raw, ("from", "to", "when"))
        return cls(
            _each(raw, "from", Source.from_wire),
            _each(raw, "to", Operation.from_wire),
            _each(raw, "when", Condition.from_wire),
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
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def needs_l7(self) -> bool:
        return any(rule.needs_l7 for rule in self.rules)

    @classmethod
    def from_wire(cls, item: object) -> AuthorizationPolicy:
        name, namespace, raw = _identify(item, "AuthorizationPolicy")
        with _named(f"AuthorizationPolicy {namespace}/{name}"):
            _check_keys(raw, ("name", "namespace", "selector", "action", "rules", "needsL7"))
            action = raw.get("action")
            if action not in _ACTIONS:
                raise PolicyError("action", f"expected one of {', '.join(_ACTIONS)}, got {action!r}")
            if not isinstance(raw.get("needsL7", False), bool):
                raise PolicyError("needsL7", f"expected a boolean, got {raw['needsL7']!r}")
            return cls(name, namespace, _selector(raw), _ACTIONS[action], _each(raw, "rules", Rule.from_wire))


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    """A PeerAuthentication. `port_modes` (sorted by port) override `mode` for those ports of the selected
    workloads; UNSET, as a mode or a port's mode, inherits from the next less specific policy."""

    name: str
    namespace: str
    selector: Selector | None
    mode: MtlsMode
    port_modes: tuple[tuple[int, MtlsMode], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_wire(cls, item: object) -> PeerAuthentication:
        name, namespace, raw = _identify(item, "PeerAuthentication")
        with _named(f"PeerAuthentication {namespace}/{name}"):
            _check_keys(raw, ("name", "namespace", "selector", "mode", "portModes"))
            selector = _selector(raw)
            mode = _mode(raw.get("mode", "UNSET"), "mode")
            port_modes: dict[int, MtlsMode] = {}
            for port, port_mode in _mapping(raw.get("portModes") or {}, "portModes").items():
                path = f"portModes.{port}"
                port_modes[_port(port, path)] = _mode(port_mode, path)
            if port_modes and selector is None:
                # Control rejects this: ports belong to workloads, so only a selector policy may name them.
                raise PolicyError("portModes", "a policy without a selector cannot set port modes")
            return cls(name, namespace, selector, mode, tuple(sorted(port_modes.items())))


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy of one config version, converted once and sorted by `namespace/name` so that decisions and
    their reasons do not depend on the order control sent them in."""

    authorization: tuple[AuthorizationPolicy, ...] = ()
    peer_authentication: tuple[PeerAuthentication, ...] = ()

    @classmethod
    def from_wire(cls, authz_items: Iterable[object], peer_auth_items: Iterable[object]) -> PolicySet:
        authz = sorted(map(AuthorizationPolicy.from_wire, authz_items), key=lambda p: (p.namespace, p.name))
        peer = sorted(map(PeerAuthentication.from_wire, peer_auth_items), key=lambda p: (p.namespace, p.name))
        return cls(tuple(authz), tuple(peer))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# The wire name of each field, as control writes it (`not_ip_blocks` is `notIpBlocks`).
_SOURCE_KEYS = tuple(_camel(f.name) for f in fields(Source))
_OPERATION_KEYS = tuple(_camel(f.name) for f in fields(Operation))


@contextmanager
def _named(policy: str) -> Iterator[None]:
    try:
        yield
    except PolicyError as exc:
        raise PolicyError(exc.field, exc.reason, policy) from None


@contextmanager
def _within(prefix: str) -> Iterator[None]:
    """Prefix the field of an error raised inside: nested parsers name fields relative to their own object."""
    try:
        yield
    except PolicyError as exc:
        raise PolicyError(f"{prefix}.{exc.field}" if exc.field else prefix, exc.reason) from None


def _identify(item: object, kind: str) -> tuple[str, str, Mapping[str, Any]]:
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


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(field, f"expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(raw: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(map(str, raw)) - set(known))
    if unknown:
        raise PolicyError(unknown[0], "unknown field; is control newer than this proxy?")


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    """`raw[key]` as a list; control always writes every list, an absent or null one reads as empty."""
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(key, f"expected a list, got {type(value).__name__}")
    return value


def _each(raw: Mapping[str, Any], key: str, convert: Callable[[object], T]) -> tuple[T, ...]:
    out: list[T] = []
    for i, entry in enumerate(_list(raw, key)):
        with _within(f"{key}[{i}]"):
            out.append(convert(entry))
    return tuple(out)


def _strings(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = _list(raw, key)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{key}[{i}]", f"expected a non-empty string, got {item!r}")
    return tuple(items)


def _networks(raw: Mapping[str, Any], key: str) -> tuple[Network, ...]:
    out = []
    for i, item in enumerate(_strings(raw, key)):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise PolicyError(f"{key}[{i}]", f"{item!r} is not a CIDR range") from None
    return tuple(out)


def _port(value: object, field: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():  # isdigit() alone takes '٨٠' and '²'
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise PolicyError(field, f"expected a port number in 1..65535, got {value!r}")
    return value


def _ports(raw: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(_port(item, f"{key}[{i}]") for i, item in enumerate(_list(raw, key)))


def _selector(raw: Mapping[str, Any]) -> Selector | None:
    value = raw.get("selector")
    if value is None:
        return None
    labels = _mapping(value, "selector")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise PolicyError(f"selector.{k}", f"expected string labels, got {k!r}: {v!r}")
    # Empty labels select every workload, exactly as no selector does; control writes None for both.
    return tuple(sorted(labels.items())) or None


def _mode(value: object, field: str) -> MtlsMode:
    if not isinstance(value, str) or value not in _MODES:
        raise PolicyError(field, f"expected one of {', '.join(_MODES)}, got {value!r}")
    return _MODES[value]
