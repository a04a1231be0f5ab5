"""Typed access to raw Kubernetes objects: every wrong type or missing field becomes a `ValidationError`
naming the field path, so a user sees `spec.ports[1].port: expected an integer, got 'http'`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from meshlet_contracts import identity

# RFC 1123 label (namespace, service names) and subdomain (pod names and most other objects): the same
# patterns identities are checked with. Every pattern here is used with `fullmatch`: `$` would also match
# before a trailing newline, so `web\n` would pass for a name and differ from `web` everywhere after.
DNS_LABEL = identity.DNS_LABEL
DNS_SUBDOMAIN = identity.DNS_SUBDOMAIN
# Label keys: optional DNS-subdomain prefix, then a name of up to 63 characters.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


CLUSTER_SCOPED = frozenset({"Namespace", "Node"})
"""Kinds without a namespace: their key ignores a stray metadata.namespace, as the API server does."""


class ValidationError(ValueError):
    """An object is invalid. `field` is the path of the offending field, when one is to blame."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """Identifies an object across sources: kind, namespace ('' when cluster-scoped), name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def fail(field: str, reason: str) -> NoReturn:
    raise ValidationError(reason, field)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _at(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def opt_map(obj: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """The mapping at `path`, or {} when absent."""
    value = _at(obj, path)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        fail(path, f"expected a mapping, got {_type_name(value)}")
    return value


def opt_list(obj: Mapping[str, Any], path: str) -> list[Any]:
    value = _at(obj, path)
    if value is None:
        return []
    if not isinstance(value, list):
        fail(path, f"expected a list, got {_type_name(value)}")
    return value


def opt_str(obj: Mapping[str, Any], path: str, default: str = "") -> str:
    value = _at(obj, path)
    if value is None:
        return default
    if not isinstance(value, str):
        fail(path, f"expected a string, got {_type_name(value)} {value!r}")
    return value


def req_str(obj: Mapping[str, Any], path: str) -> str:
    value = opt_str(obj, path)
    if not value:
        fail(path, "required")
    return value


def opt_bool(obj: Mapping[str, Any], path: str, default: bool = False) -> bool:
    value = _at(obj, path)
    if value is None:
        return default
    if not isinstance(value, bool):
        fail(path, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def port_number(value: object, field: str) -> int:
    """A TCP port: an integer (or a string of ASCII digits, as in AuthorizationPolicy) within 1..65535."""
    # str.isdigit() alone would also take '٨٠' (int() reads it as 80) and '²' (int() raises).
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        fail(field, f"expected a port number, got {_type_name(value)} {value!r}")
    if not 1 <= value <= 65535:
        fail(field, f"port {value} is out of range 1..65535")
    return value


def str_list(obj: Mapping[str, Any], path: str) -> tuple[str, ...]:
    items = opt_list(obj, path)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            fail(f"{path}[{i}]", f"expected a string, got {_type_name(item)} {item!r}")
    return tuple(items)


def labels(obj: Mapping[str, Any], path: str) -> dict[str, str]:
    """A label map (metadata.labels, selector.matchLabels): keys and values checked as Kubernetes does."""
    raw = opt_map(obj, path)
    out: dict[str, str] = {}
    for key, value in raw.items():
        check_label_key(key, f"{path}[{key!r}]" if isinstance(key, str) else path)
        if not isinstance(value, str):
            fail(f"{path}.{key}", f"label values are strings, got {_type_name(value)} {value!r}")
        if not _LABEL_VALUE.fullmatch(value):
            fail(f"{path}.{key}", f"invalid label value {value!r}")
        out[key] = value
    return out


def check_label_key(key: object, field: str) -> None:
    if not isinstance(key, str) or not key:
        fail(field, f"label keys are non-empty strings, got {key!r}")
    prefix, _, name = key.rpartition("/")
    if prefix and not DNS_SUBDOMAIN.fullmatch(prefix):
        fail(field, f"invalid label key prefix {prefix!r}")
    if not _LABEL_NAME.fullmatch(name):
        fail(field, f"invalid label key {key!r}")


def object_key(obj: Mapping[str, Any], namespaced: bool) -> ObjectKey:
    """The key of a raw object; checks kind, metadata.name and (when namespaced) metadata.namespace."""
    kind = req_str(obj, "kind")
    name = req_str(obj, "metadata.name")
    if not DNS_SUBDOMAIN.fullmatch(name):
        fail("metadata.name", f"{name!r} is not a valid name (lowercase RFC 1123 subdomain)")
    namespace = opt_str(obj, "metadata.namespace")
    if namespaced and not namespace:
        fail("metadata.namespace", "required")
    if namespace and not DNS_LABEL.fullmatch(namespace):
        fail("metadata.namespace", f"{namespace!r} is not a valid namespace name")
    return ObjectKey(kind, namespace if namespaced else "", name)


def typed_key(obj: Mapping[str, Any], kind: str, api_versions: tuple[str, ...]) -> ObjectKey:
    """The key of a raw namespaced object of `kind`, after checking its apiVersion is one of `api_versions`."""
    api_version = req_str(obj, "apiVersion")
    if api_version not in api_versions:
        expected = api_versions[0] if len(api_versions) == 1 else f"one of {', '.join(api_versions)}"
        fail("apiVersion", f"unsupported apiVersion {api_version!r} for {kind}; expected {expected}")
    key = object_key(obj, namespaced=True)
    if key.kind != kind:
        fail("kind", f"expected {kind}, got {key.kind!r}")
    return key
