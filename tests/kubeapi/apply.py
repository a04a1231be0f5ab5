"""Server-side apply's field ownership, as far as one object's managers go.

Each apply records the fields its manifest set, in managedFields[].fieldsV1 in the API's own encoding
(`f:<field>` for a map key, `k:{"name":"x"}` for an item of a list merged by key, `v:<json>` for a value of a
set-like list; a scalar or an atomic list is owned whole). Applying again by the same manager removes first
every field it set last time and no longer sets, unless another applier still owns it, then merges the new
manifest: so dropping a volume from a manifest drops it from the object, as the Kubernetes docs specify
("Server-Side Apply", field management). Conflicts between managers are not raised (`force` is what
`meshlet install` sends anyway); fields written by plain updates are not tracked.
"""

from __future__ import annotations

import json
from typing import Any

from tests.kubeapi.patches import MERGE_KEYS

FieldSet = dict[str, Any]
_METADATA_TRACKED = ("labels", "annotations")


def field_set(obj: dict[str, Any], builtin: bool) -> FieldSet:
    """The fields a manifest sets (apiVersion, kind, status and the object's identity are not owned)."""
    out: FieldSet = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata":
            meta = {k: v for k, v in (value or {}).items() if k in _METADATA_TRACKED}
            if meta:
                out["f:metadata"] = _fields(meta, builtin, "")
            continue
        out[f"f:{key}"] = _fields(value, builtin, key)
    return out


def _fields(value: Any, builtin: bool, field: str) -> FieldSet:
    if isinstance(value, dict):
        return {f"f:{k}": _fields(v, builtin, k) for k, v in value.items()}
    if isinstance(value, list) and builtin and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        if key is None:
            return {f"v:{json.dumps(item, sort_keys=True)}": {} for item in value}
        items = [item for item in value if isinstance(item, dict)]
        return {f"k:{json.dumps({key: item.get(key)})}": _fields(item, builtin, "") for item in items}
    return {}  # a scalar, or a list replaced as a whole


def _child(target: Any, name: str) -> Any:
    if name.startswith("f:") and isinstance(target, dict):
        return target.get(name[2:])
    if name.startswith("k:") and isinstance(target, list):
        ((key, wanted),) = json.loads(name[2:]).items()
        return next((i for i in target if isinstance(i, dict) and i.get(key) == wanted), None)
    return None


def _remove(target: Any, name: str) -> None:
    if name.startswith("f:") and isinstance(target, dict):
        target.pop(name[2:], None)
    elif name.startswith("k:") and isinstance(target, list):
        ((key, wanted),) = json.loads(name[2:]).items()
        target[:] = [i for i in target if not (isinstance(i, dict) and i.get(key) == wanted)]
    elif name.startswith("v:") and isinstance(target, list):
        value = json.loads(name[2:])
        target[:] = [i for i in target if i != value]


def prune(target: Any, before: FieldSet, now: FieldSet, others: list[FieldSet]) -> None:
    """Remove from `target` (in place) what `before` owned, `now` does not, and no set in `others` owns."""
    for name, sub in before.items():
        owners = [o[name] for o in others if isinstance(o.get(name), dict)]
        if name not in now and not any(name in o for o in others):
            _remove(target, name)
        elif sub:
            # kept (by this manager or another): what inside it nobody applies any more still goes
            child = _child(target, name)
            if child is not None:
                prune(child, sub, now.get(name) or {}, owners)


def applied_sets(obj: dict[str, Any], manager: str, subresource: str | None) -> tuple[FieldSet, list[FieldSet]]:
    """The field set `manager` applied last, and those of the other appliers."""
    mine: FieldSet = {}
    others: list[FieldSet] = []
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("operation") != "Apply" or entry.get("subresource") != subresource:
            continue
        if entry.get("manager") == manager:
            mine = entry.get("fieldsV1") or {}
        else:
            others.append(entry.get("fieldsV1") or {})
    return mine, others
