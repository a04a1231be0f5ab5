"""What the server does to an object's metadata and status on create and update.

Create: the name (or `generateName` + 5 random characters), namespace from the URL, a fresh uid,
creationTimestamp, generation 1; kinds with a /status subresource drop the status sent (a Pod starts Pending, a
Namespace Active). Update: a stale `metadata.resourceVersion` is 409 Conflict; uid and creationTimestamp are
kept; through the main resource the status cannot change, through /status only the status can; the
generation grows when anything outside metadata and status changes.
"""

from __future__ import annotations

import copy
import datetime
import random
import string
import uuid
from typing import Any

from tests.kubeapi import errors
from tests.kubeapi.resources import ResourceType

_INITIAL_STATUS: dict[str, dict[str, Any]] = {
    "Pod": {"phase": "Pending"},
    "Namespace": {"phase": "Active"},
    "Service": {"loadBalancer": {}},
}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", "") or "", meta.get("name", ""))


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def prepare_create(rt: ResourceType, namespace: str, body: dict[str, Any], keep_status: bool) -> dict[str, Any]:
    """The object as stored by a create of `body` at `namespace` (the URL's; "" for cluster-scoped)."""
    if not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be an object")
    obj = copy.deepcopy(body)
    meta = obj.setdefault("metadata", {})
    if rt.namespaced:
        if meta.get("namespace") and namespace and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace or meta.get("namespace") or "default"
    else:
        meta.pop("namespace", None)
    if not meta.get("name"):
        if not meta.get("generateName"):
            raise errors.ApiError(
                "Invalid",
                f'{rt.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
            )
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        meta["name"] = meta["generateName"] + suffix
    obj["apiVersion"] = rt.api_version
    obj["kind"] = rt.kind
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    meta["generation"] = 1
    for dropped in ("resourceVersion", "deletionTimestamp"):
        meta.pop(dropped, None)
    if rt.status and not keep_status:
        obj.pop("status", None)
        if rt.kind in _INITIAL_STATUS:
            obj["status"] = copy.deepcopy(_INITIAL_STATUS[rt.kind])
    return obj


def prepare_update(
    rt: ResourceType, old: dict[str, Any], wanted: dict[str, Any], subresource: str | None
) -> dict[str, Any]:
    """The object as stored by an update of `old` to `wanted` through the main resource or /status."""
    if not isinstance(wanted, dict):
        raise errors.bad_request("the body of the request must be an object")
    name = old["metadata"]["name"]
    wanted_meta = wanted.get("metadata") or {}
    if wanted_meta.get("name") not in (None, name):
        raise errors.bad_request(
            f"the name of the object ({wanted_meta['name']}) does not match the name on the URL ({name})"
        )
    sent_rv = wanted_meta.get("resourceVersion")
    if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
        raise errors.conflict(
            rt.plural,
            rt.group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    if subresource == "status":
        new = copy.deepcopy(old)
        if "status" in wanted:
            new["status"] = copy.deepcopy(wanted["status"])
        else:
            new.pop("status", None)
        return new
    new = copy.deepcopy(wanted)
    new["apiVersion"], new["kind"] = rt.api_version, rt.kind
    meta = new.setdefault("metadata", {})
    for kept in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation"):
        if kept in old["metadata"]:
            meta[kept] = old["metadata"][kept]
        else:
            meta.pop(kept, None)
    if rt.status:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    if _spec_part(new) != _spec_part(old):
        meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
    return new


def record_apply(
    obj: dict[str, Any],
    manager: str,
    rt: ResourceType,
    subresource: str | None,
    fields_v1: dict[str, Any] | None = None,
) -> None:
    """Note the field manager of a server-side apply in managedFields, with the fields it set (`fields_v1`, see
    apply.py) when known. An entry whose field set is unchanged is kept as is, so re-applying the same manifest
    stays a no-op (no new resourceVersion)."""
    fields = obj["metadata"].setdefault("managedFields", [])
    for m in fields:
        if m.get("manager") == manager and m.get("subresource") == subresource:
            if fields_v1 is not None and m.get("fieldsV1") != fields_v1:
                m["fieldsV1"], m["time"] = fields_v1, now()
            return
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": "Apply",
        "apiVersion": rt.api_version,
        "time": now(),
        "fieldsType": "FieldsV1",
    }
    if fields_v1 is not None:
        entry["fieldsV1"] = fields_v1
    if subresource:
        entry["subresource"] = subresource
    fields.append(entry)
