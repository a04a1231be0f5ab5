"""The REST verbs on a resource URL: list, watch, get, create, replace, patch, delete.

URLs follow kube-apiserver: /api/v1/[namespaces/<ns>/]<plural>[/<name>[/status]] for the core group and
/apis/<group>/<version>/... for the others. Query parameters: labelSelector, fieldSelector, resourceVersion,
resourceVersionMatch, limit/continue (chunked lists), watch, allowWatchBookmarks, timeoutSeconds, fieldManager,
force, sendInitialEvents (WatchList). A watch is a chunked 200 response of newline-delimited
`{"type": ..., "object": ...}` events; a resourceVersion older than the kept history gets one ERROR event
carrying a 410 Expired Status, then the stream ends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.kubeapi import apply, errors, objects, patches
from tests.kubeapi.resources import ResourceType
from tests.kubeapi.selectors import (
    FieldSelector,
    Requirement,
    fields_match,
    labels_match,
    parse_fields,
    parse_labels,
)
from tests.kubeapi.store import Store

CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter."
)


@dataclass
class Target:
    """A parsed resource URL."""

    rt: ResourceType
    namespace: str | None  # None: all namespaces (or a cluster-scoped resource)
    name: str | None
    subresource: str | None


def _rv(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise errors.ApiError("Invalid", f"resourceVersion: Invalid value: {text!r}: must be an integer") from None


def _selected(request: web.Request, t: Target) -> tuple[list[Requirement], FieldSelector]:
    return parse_labels(request.query.get("labelSelector")), parse_fields(request.query.get("fieldSelector"), t.rt.kind)


def list_objects(store: Store, request: web.Request, t: Target) -> dict[str, Any]:
    labels, fields = _selected(request, t)
    q = request.query
    start_after: tuple[str, str] | None = None
    if q.get("continue"):
        try:
            token = json.loads(base64.urlsafe_b64decode(q["continue"]))
            at, start_after = int(token["rv"]), (token["start"][0], token["start"][1])
        except (ValueError, KeyError, TypeError):
            raise errors.bad_request("invalid continue token") from None
        try:
            items, rv = store.snapshot(t.rt, at)
        except errors.ApiError:
            raise errors.expired(CONTINUE_EXPIRED) from None
    else:
        wanted = _rv(q.get("resourceVersion"))
        if q.get("resourceVersionMatch") == "Exact":
            if not wanted:
                raise errors.ApiError(
                    "Invalid",
                    'resourceVersionMatch: Forbidden: resourceVersionMatch "Exact" is forbidden for resourceVersion ""',
                )
            items, rv = store.snapshot(t.rt, wanted)
        else:
            if wanted and wanted > store.resource_version:
                raise errors.ApiError(
                    "Timeout", f"Too large resource version: {wanted}, current: {store.resource_version}"
                )
            items, rv = store.snapshot(t.rt, None)
    selected = [
        obj
        for key, obj in sorted(items.items())
        if (t.namespace is None or key[0] == t.namespace)
        and (start_after is None or key > start_after)
        and _matches(labels, fields, obj)
    ]
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    limit = int(q.get("limit") or 0)
    if limit and len(selected) > limit:
        last = objects.key_of(selected[limit - 1])
        meta["continue"] = base64.urlsafe_b64encode(json.dumps({"rv": rv, "start": list(last)}).encode()).decode()
        meta["remainingItemCount"] = len(selected) - limit
        selected = selected[:limit]
    return {"kind": f"{t.rt.kind}List", "apiVersion": t.rt.api_version, "metadata": meta, "items": selected}


def _matches(labels: list[Requirement], fields: FieldSelector, obj: dict[str, Any]) -> bool:
    return labels_match(labels, obj) and fields_match(fields, obj)


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


async def watch(store: Store, request: web.Request, t: Target, bookmark_interval: float) -> web.StreamResponse:
    """Stream events until the client goes, timeoutSeconds passes, or a test drops the watch."""
    labels, fields = _selected(request, t)
    q = request.query
    bookmarks = q.get("allowWatchBookmarks") in ("true", "1", "True")
    try:
        timeout = int(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
    except ValueError:
        raise errors.bad_request(f"timeoutSeconds: invalid value {q['timeoutSeconds']!r}") from None
    initial = q.get("sendInitialEvents") in ("true", "1", "True")
    if initial and not bookmarks:
        raise errors.ApiError(
            "Invalid", "sendInitialEvents: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true"
        )
    rv = _rv(q.get("resourceVersion"))
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        watcher = store.watch(t.rt, t.namespace, labels, fields, rv, asyncio.get_running_loop(), initial)
    except errors.ApiError as exc:
        await response.prepare(request)
        await response.write(_line("ERROR", exc.body))  # the real server answers 200 then an ERROR event
        await response.write_eof()
        return response
    await response.prepare(request)
    deadline = time.monotonic() + timeout if timeout is not None else None
    next_bookmark = time.monotonic() + bookmark_interval
    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = min(next_bookmark - now, (deadline - now) if deadline is not None else bookmark_interval)
            try:
                item = await asyncio.wait_for(watcher.queue.get(), timeout=max(wait, 0.0))
            except TimeoutError:
                if bookmarks and time.monotonic() >= next_bookmark:
                    store.bookmark(watcher)
                if time.monotonic() >= next_bookmark:
                    next_bookmark = time.monotonic() + bookmark_interval
                continue
            if item is None:
                break
            if item[0] == "ABORT":
                if request.transport is not None:
                    request.transport.abort()  # no terminating chunk: the client sees a broken stream
                return response
            await response.write(_line(*item))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away: nothing left to tell it
    finally:
        store.forget(watcher)
    return response


async def read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise errors.bad_request(f"error decoding body: {exc}") from None


async def create(store: Store, request: web.Request, t: Target) -> tuple[dict[str, Any], int]:
    if t.rt.namespaced and t.namespace is None:
        raise errors.ApiError("MethodNotAllowed", "the server does not allow this method on the requested resource")
    body = await read_json(request)
    obj = store.create(t.rt, t.namespace or "", body)
    return obj, 201


async def replace(store: Store, request: web.Request, t: Target) -> dict[str, Any]:
    assert t.name is not None
    body = await read_json(request)
    return store.update(t.rt, t.namespace or "", t.name, lambda _old: body, t.subresource)


async def patch(store: Store, request: web.Request, t: Target) -> tuple[dict[str, Any], int]:
    assert t.name is not None
    content_type = request.content_type
    if content_type not in patches.PATCH_TYPES:
        raise errors.ApiError(
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(patches.PATCH_TYPES),
        )
    body = patches.decode(content_type, await request.read())
    manager = request.query.get("fieldManager")
    if content_type == patches.APPLY:
        if not manager:
            raise errors.bad_request(
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
            )
        if not isinstance(body, dict):
            raise errors.bad_request("apply patch body must be an object")
        try:
            store.get(t.rt, t.namespace or "", t.name)
        except errors.ApiError as exc:
            if exc.code != 404 or t.subresource:
                raise
            seeded = dict(body, metadata={**(body.get("metadata") or {}), "name": t.name})
            objects.record_apply(seeded, manager, t.rt, None, apply.field_set(body, t.rt.builtin))
            return store.create(t.rt, t.namespace or "", seeded), 201

    def change(old: dict[str, Any]) -> dict[str, Any]:
        owned = None
        if content_type == patches.APPLY and manager and t.subresource is None:
            # what this manager applied before and no longer does goes first (see apply.py)
            owned = apply.field_set(body, t.rt.builtin)
            before, others = apply.applied_sets(old, manager, None)
            apply.prune(old, before, owned, others)
        new = patches.apply(content_type, old, body, t.rt.builtin)
        if content_type == patches.APPLY and manager:
            objects.record_apply(new, manager, t.rt, t.subresource, owned)
        return new

    return store.update(t.rt, t.namespace or "", t.name, change, t.subresource), 200


async def delete(store: Store, request: web.Request, t: Target) -> dict[str, Any]:
    assert t.name is not None
    body = await read_json(request) if request.can_read_body else None
    pre = (body or {}).get("preconditions") if isinstance(body, dict) else None
    obj = store.delete(t.rt, t.namespace or "", t.name, pre)
    if t.rt.return_deleted:
        return obj
    return errors.success({"name": t.name, "group": t.rt.group, "kind": t.rt.plural, "uid": obj["metadata"]["uid"]})
