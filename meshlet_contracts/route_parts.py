"""The parts of an HTTPRoute in proxy-ready form: matches, backend references and filters, with their strict wire
readers; `meshlet_contracts.routes` assembles them into rules and routes (and re-exports them, the one import
control and ztunnel use). Errors are `RouteError`s naming the field relative to the part being read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from meshlet_contracts.config_items import each, items, mapping, port, within
from meshlet_contracts.policy import PolicyError, known_fields

PathType = Literal["Exact", "PathPrefix", "RegularExpression"]
ValueType = Literal["Exact", "RegularExpression"]
PathModifierType = Literal["ReplaceFullPath", "ReplacePrefixMatch"]
FilterType = Literal[
    "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror"
]

PATH_TYPES: tuple[PathType, ...] = get_args(PathType)
VALUE_TYPES: tuple[ValueType, ...] = get_args(ValueType)
PATH_MODIFIER_TYPES: tuple[PathModifierType, ...] = get_args(PathModifierType)
FILTER_TYPES: tuple[FilterType, ...] = get_args(FilterType)
REDIRECT_CODES = (301, 302, 303, 307, 308)
"""Gateway API v1.0 has 301 and 302; later versions add 303, 307 and 308 (the "additional redirect" feature)."""
"""The status codes Gateway API v1 allows for RequestRedirect; 302 when unset."""


class RouteError(PolicyError):
    """A route item does not follow the schema; the message names the route and the field."""


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: PathType = "PathPrefix"
    value: str = "/"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value}

    @classmethod
    def from_wire(cls, item: object) -> PathMatch:
        raw = known_fields(item, ("type", "value"))
        return cls(_choice(raw, "type", PATH_TYPES), _text(raw, "value"))


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header (name compared case-insensitively) or query parameter (name compared exactly) match."""

    name: str
    value: str
    type: ValueType = "Exact"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "value": self.value}

    @classmethod
    def from_wire(cls, item: object) -> ValueMatch:
        raw = known_fields(item, ("type", "name", "value"))
        return cls(_text(raw, "name"), _text(raw, "value", empty=True), _choice(raw, "type", VALUE_TYPES))


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Every part must match (AND). The default, `{}`, is a PathPrefix `/` match: every request."""

    path: PathMatch = PathMatch()
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "path": self.path.to_wire(),
            "headers": [h.to_wire() for h in self.headers],
            "queryParams": [q.to_wire() for q in self.query_params],
            "method": self.method,
        }

    @classmethod
    def from_wire(cls, item: object) -> RouteMatch:
        raw = known_fields(item, ("path", "headers", "queryParams", "method"))
        with within("path"):
            path = PathMatch.from_wire(raw.get("path"))
        method = raw.get("method")
        if method is not None and (not isinstance(method, str) or not method):
            raise RouteError("method", f"expected a non-empty string or null, got {method!r}")
        return cls(
            path, each(raw, "headers", ValueMatch.from_wire), each(raw, "queryParams", ValueMatch.from_wire), method
        )


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A Service (Gateway API `group: ""`, `kind: Service`) and port; `weight` is its share within the rule."""

    name: str
    namespace: str
    port: int
    weight: int = 1

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "port": self.port, "weight": self.weight}

    @classmethod
    def from_wire(cls, item: object) -> BackendRef:
        raw = known_fields(item, ("name", "namespace", "port", "weight"))
        weight = raw.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 1_000_000:
            raise RouteError("weight", f"expected an integer in 0..1000000, got {weight!r}")
        return cls(_text(raw, "name"), _text(raw, "namespace"), port(raw.get("port"), "port"), weight)


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    """`set` replaces every value of a header, `add` appends one, `remove` drops every value; names as written,
    compared case-insensitively."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "set": [{"name": n, "value": v} for n, v in self.set],
            "add": [{"name": n, "value": v} for n, v in self.add],
            "remove": list(self.remove),
        }

    @classmethod
    def from_wire(cls, item: object) -> HeaderModifier:
        raw = known_fields(item, ("set", "add", "remove"))
        removed = []
        for i, name in enumerate(items(raw, "remove")):
            if not isinstance(name, str) or not name:
                raise RouteError(f"remove[{i}]", f"expected a non-empty string, got {name!r}")
            removed.append(name)
        return cls(each(raw, "set", _header), each(raw, "add", _header), tuple(removed))


@dataclass(frozen=True, slots=True)
class PathModifier:
    type: PathModifierType
    value: str
    """The full path, or the replacement of the matched prefix ("" and "/" both replace it with nothing)."""

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value}

    @classmethod
    def from_wire(cls, item: object) -> PathModifier:
        raw = known_fields(item, ("type", "value"))
        return cls(_choice(raw, "type", PATH_MODIFIER_TYPES), _text(raw, "value", empty=True))


@dataclass(frozen=True, slots=True)
class RequestRedirect:
    """Answer with a redirect instead of forwarding; unset parts keep the request's."""

    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302

    def to_wire(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "hostname": self.hostname,
            "path": None if self.path is None else self.path.to_wire(),
            "port": self.port,
            "statusCode": self.status_code,
        }

    @classmethod
    def from_wire(cls, item: object) -> RequestRedirect:
        raw = known_fields(item, ("scheme", "hostname", "path", "port", "statusCode"))
        scheme = _opt_text(raw, "scheme")
        if scheme not in (None, "http", "https"):
            raise RouteError("scheme", f"expected http, https or null, got {scheme!r}")
        code = raw.get("statusCode", 302)
        if code not in REDIRECT_CODES or isinstance(code, bool):
            raise RouteError("statusCode", f"expected one of {', '.join(map(str, REDIRECT_CODES))}, got {code!r}")
        with within("path"):
            path = None if raw.get("path") is None else PathModifier.from_wire(raw["path"])
        number = None if raw.get("port") is None else port(raw["port"], "port")
        return cls(scheme, _opt_text(raw, "hostname"), path, number, int(code))


@dataclass(frozen=True, slots=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "path": None if self.path is None else self.path.to_wire()}

    @classmethod
    def from_wire(cls, item: object) -> URLRewrite:
        raw = known_fields(item, ("hostname", "path"))
        with within("path"):
            path = None if raw.get("path") is None else PathModifier.from_wire(raw["path"])
        return cls(_opt_text(raw, "hostname"), path)


Filter = HeaderModifier | RequestRedirect | URLRewrite | BackendRef
"""A filter's settings: RequestMirror's is the BackendRef of the mirror."""
_FILTER_KEYS: dict[FilterType, str] = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
}


@dataclass(frozen=True, slots=True)
class RouteFilter:
    """One filter, as in Gateway API: its `type` and the settings of that type."""

    type: FilterType
    settings: Filter

    def to_wire(self) -> dict[str, Any]:
        key = _FILTER_KEYS[self.type]
        body = self.settings.to_wire()
        return {"type": self.type, key: {"backendRef": body} if self.type == "RequestMirror" else body}

    @classmethod
    def from_wire(cls, item: object) -> RouteFilter:
        raw = mapping(item, "")
        kind = _choice(raw, "type", FILTER_TYPES)
        key = _FILTER_KEYS[kind]
        known_fields(raw, ("type", key))
        with within(key):
            body = mapping(raw.get(key), "")
            settings: Filter
            if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
                settings = HeaderModifier.from_wire(body)
            elif kind == "RequestRedirect":
                settings = RequestRedirect.from_wire(body)
            elif kind == "URLRewrite":
                settings = URLRewrite.from_wire(body)
            else:
                known_fields(body, ("backendRef",))
                with within("backendRef"):
                    settings = BackendRef.from_wire(body.get("backendRef"))
        return cls(kind, settings)


def _header(item: object) -> tuple[str, str]:
    raw = known_fields(item, ("name", "value"))
    return _text(raw, "name"), _text(raw, "value", empty=True)


def _text(raw: Mapping[str, Any], key: str, empty: bool = False) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or (not value and not empty):
        raise RouteError(key, f"expected a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def _opt_text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise RouteError(key, f"expected a string or null, got {value!r}")
    return value


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[Any, ...]) -> Any:
    value = raw.get(key)
    if value not in choices:
        raise RouteError(key, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _seconds(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise RouteError(key, f"expected seconds (a non-negative number) or null, got {value!r}")
    return float(value)
