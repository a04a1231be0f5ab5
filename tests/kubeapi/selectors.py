"""Label and field selectors, parsed and matched as kube-apiserver does.

Label selectors (k8s.io/apimachinery/pkg/labels): comma-separated requirements, all of which must hold:
`k=v`, `k==v`, `k!=v` (also true when the label is absent), `k in (a,b)`, `k notin (a,b)` (true when absent),
`k` (exists) and `!k` (does not exist). Field selectors support `=`, `==` and `!=` on the fields each resource
declares; an unsupported field is a 400, as on the real server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.kubeapi.errors import bad_request

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One requirement of a selector: `key op values`."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, found: dict[str, str]) -> bool:
        present = self.key in found
        value = found.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present  # "!"


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` is two requirements)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_labels(text: str | None) -> list[Requirement]:
    """Parse a labelSelector; an empty one selects everything. A malformed one is a 400."""
    reqs: list[Requirement] = []
    for part in _split(text or ""):
        eq = _EQ_RE.match(part)
        if eq:
            key, op, value = eq.groups()
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            continue
        st = _SET_RE.match(part)
        if not st:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
        negated, key, setop, values = st.groups()
        if setop:
            if negated:
                raise bad_request(f"unable to parse requirement: {part.strip()!r}")
            items = tuple(v.strip() for v in values.split(",") if v.strip())
            reqs.append(Requirement(key, setop, items))
        else:
            reqs.append(Requirement(key, "!" if negated else "exists"))
    return reqs


def labels_match(reqs: list[Requirement], obj: dict[str, Any]) -> bool:
    found = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(found) for r in reqs)


# The fields every resource can be selected by, and the extra ones each kind declares (pod's spec.nodeName
# is what a node agent uses to see only its own pods).
_COMMON_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": lambda o: str(o.get("metadata", {}).get("name", "")),
    "metadata.namespace": lambda o: str(o.get("metadata", {}).get("namespace", "")),
}
_KIND_FIELDS: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {
    "Pod": {
        "spec.nodeName": lambda o: str(o.get("spec", {}).get("nodeName", "") or ""),
        "spec.serviceAccountName": lambda o: str(o.get("spec", {}).get("serviceAccountName", "") or ""),
        "status.phase": lambda o: str(o.get("status", {}).get("phase", "") or ""),
        "status.podIP": lambda o: str(o.get("status", {}).get("podIP", "") or ""),
    },
    "Event": {
        "involvedObject.kind": lambda o: str(o.get("involvedObject", {}).get("kind", "")),
        "involvedObject.name": lambda o: str(o.get("involvedObject", {}).get("name", "")),
        "involvedObject.namespace": lambda o: str(o.get("involvedObject", {}).get("namespace", "")),
        "involvedObject.uid": lambda o: str(o.get("involvedObject", {}).get("uid", "")),
        "reason": lambda o: str(o.get("reason", "")),
        "type": lambda o: str(o.get("type", "")),
    },
    "Namespace": {"status.phase": lambda o: str(o.get("status", {}).get("phase", ""))},
}

FieldSelector = list[tuple[Callable[[dict[str, Any]], str], bool, str]]


def parse_fields(text: str | None, kind: str) -> FieldSelector:
    """Parse a fieldSelector for `kind`: (getter, equal?, value) triples. Unknown fields are a 400."""
    known = {**_COMMON_FIELDS, **_KIND_FIELDS.get(kind, {})}
    out: FieldSelector = []
    for part in _split(text or ""):
        eq = _EQ_RE.match(part)
        if not eq:
            raise bad_request(f"invalid selector: {part.strip()!r}; can't understand it")
        key, op, value = eq.groups()
        if key not in known:
            raise bad_request(f"field label not supported: {key}")
        out.append((known[key], op != "!=", value))
    return out


def fields_match(selector: FieldSelector, obj: dict[str, Any]) -> bool:
    return all((get(obj) == value) == equal for get, equal, value in selector)
