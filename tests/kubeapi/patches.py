"""The PATCH bodies kube-apiserver accepts, applied to plain JSON objects.

- application/merge-patch+json: RFC 7386 (maps merge, `null` deletes a key, anything else replaces).
- application/strategic-merge-patch+json: only for built-in kinds (a custom resource answers 415). Maps merge
  as in a merge patch; the lists the Kubernetes types declare `patchStrategy: merge` for (containers, ports,
  env, volumes, conditions, ownerReferences, finalizers ...) merge by their patchMergeKey, every other list is
  replaced. Directives ($patch, $retainKeys, $setElementOrder) are not supported.
- application/json-patch+json: RFC 6902 (add, remove, replace, move, copy, test); the body must be a list.
- application/apply-patch+yaml: server-side apply: create, or merge by the rules above after removing what
  the same manager applied before and no longer applies (apply.py); no conflicts between managers are raised
  (`force` is accepted and has nothing to override).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from tests.kubeapi.errors import ApiError, bad_request

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE, STRATEGIC, APPLY)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: a non-object patch replaces the target; an object patch merges key by key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# field name -> patchMergeKey for the lists the core types merge (None: a list of scalars, merged as a set).
# Keyed by field name alone, which is unambiguous for the kinds served here.
MERGE_KEYS: dict[str, str | None] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "finalizers": None,
    "containerStatuses": "name",
    "podIPs": "ip",
    "addresses": "type",  # node status addresses
}


def strategic_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge, without directives: maps merge, declared lists merge by key, other lists are replaced."""
    if isinstance(patch, list) and isinstance(target, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged: list[Any] = copy.deepcopy(target)
        for item in patch:
            if key is None:
                if item not in merged:
                    merged.append(copy.deepcopy(item))
                continue
            match = next(
                (i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item.get(key)), None
            )
            if match is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[match] = strategic_patch(merged[match], item)
        return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = strategic_patch(result.get(name), value, name)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"json patch: invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ApiError("Invalid", f"json patch: doc is missing path: /{'/'.join(parts)}")
    return node


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    key = parts[-1]
    try:
        return parent[int(key)] if isinstance(parent, list) else parent[key]
    except (KeyError, IndexError, ValueError):
        raise ApiError("Invalid", f"json patch: missing value at /{'/'.join(parts)}") from None


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _parent(doc, parts)
    value = _get(doc, parts)
    if isinstance(parent, list):
        del parent[int(parts[-1])]
    else:
        del parent[parts[-1]]
    return value


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    key = parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if key == "-" else int(key), value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise ApiError("Invalid", f"json patch: cannot add to /{'/'.join(parts)}")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902, applied to a copy; a failed `test` or a bad path is 422 Invalid as on the real server."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise ApiError("Invalid", f"json patch: testing value /{'/'.join(parts)} failed")
        else:
            raise bad_request(f"json patch: unexpected operation {kind!r}")
    return doc


def decode(content_type: str, raw: bytes) -> Any:
    """Parse a patch body; apply patches are YAML (JSON is YAML too)."""
    try:
        if content_type == APPLY:
            return yaml.safe_load(raw.decode() or "{}")
        return json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"error decoding patch: {exc}") from None


def apply(content_type: str, target: dict[str, Any], patch: Any, builtin: bool) -> dict[str, Any]:
    """Apply a decoded patch of `content_type` to `target` (unchanged); returns the patched copy."""
    if content_type == JSON_PATCH:
        result = json_patch(target, patch)
    elif content_type == STRATEGIC and not builtin:
        raise ApiError(
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )
    elif content_type in (MERGE, STRATEGIC, APPLY):
        if not isinstance(patch, dict):
            raise bad_request("patch body must be a JSON object")
        # apply is simplified to the built-in merge rules: strategic for built-in kinds, else a merge patch
        result = strategic_patch(target, patch) if builtin and content_type != MERGE else merge_patch(target, patch)
    else:
        raise ApiError("UnsupportedMediaType", f"the body of the request was in an unknown format ({content_type})")
    if not isinstance(result, dict):
        raise bad_request("patch must produce an object")
    return result
