"""Objects by group/version/resource/namespace/name, one global resourceVersion, and a bounded history.

Every write takes the next value of one counter (like an etcd revision) as the object's resourceVersion and
appends an event to its resource's history; a watch replays the history after its resourceVersion, or fails
with 410 Expired when that version is older than what is kept (`compact()` forgets it all, for tests). The
store is thread-safe: the HTTP handlers run on the server's loop, a test may seed objects from its own thread,
and events reach each watch through its loop in commit order.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.kubeapi import errors, objects
from tests.kubeapi.resources import BUILTIN, CRD, ResourceType, crd_status, crd_types
from tests.kubeapi.selectors import FieldSelector, Requirement, fields_match, labels_match

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class Change:
    """One committed write: the event type, the object after it, and the object before it."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass
class Watcher:
    """An open watch: its filter and the queue its HTTP response drains (None ends the stream)."""

    rt: ResourceType
    namespace: str | None
    labels: list[Requirement]
    fields: FieldSelector
    loop: asyncio.AbstractEventLoop
    after: int = 0  # changes at or below this resourceVersion are not for this watch
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = field(default_factory=asyncio.Queue)

    def selects(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj.get("metadata", {}).get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def translate(self, change: Change) -> tuple[str, dict[str, Any]] | None:
        """What this watch sees: an object entering its selector is ADDED, one leaving it is DELETED."""
        now = self.selects(change.obj) if change.type != "DELETED" else False
        before = self.selects(change.prev)
        if change.type == "DELETED":
            return ("DELETED", change.obj) if before else None
        if now and before:
            return ("MODIFIED", change.obj)
        if now:
            return ("ADDED", change.obj)
        if before:
            return ("DELETED", change.obj)
        return None

    def push(self, item: tuple[str, dict[str, Any]] | None) -> None:
        """Queue an event (its object a copy of ours, so it is given the version this watch asked for)."""
        if item is not None and item[0] != "BOOKMARK":
            item[1]["apiVersion"] = self.rt.api_version
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class Store:
    """The state of the fake cluster. All public methods may be called from any thread."""

    def __init__(self, history: int = 1000, start_rv: int = 100) -> None:
        self._lock = threading.RLock()
        self._rv = start_rv
        self.history_size = history
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        # By storage (group, plural): every served version of a resource shares its objects and history.
        self._objects: dict[tuple[str, str], dict[Key, dict[str, Any]]] = {}
        self._history: dict[tuple[str, str], deque[Change]] = {}
        self._compacted: dict[tuple[str, str], int] = {}
        self.watchers: list[Watcher] = []
        for rt in BUILTIN:
            self.register(rt)
        ns_type = self.types[("", "v1", "namespaces")]
        for name in DEFAULT_NAMESPACES:
            self.create(ns_type, "", {"metadata": {"name": name}})

    # ---- types ----
    def register(self, rt: ResourceType) -> None:
        """Serve a resource type (a CRD's kind); idempotent."""
        with self._lock:
            self.types.setdefault(rt.key, rt)
            self._objects.setdefault(rt.storage, {})
            self._history.setdefault(rt.storage, deque())
            self._compacted.setdefault(rt.storage, self._rv)

    def unregister(self, rt: ResourceType) -> None:
        with self._lock:
            self.types.pop(rt.key, None)
            if not any(other.storage == rt.storage for other in self.types.values()):  # its last served version
                self._objects.pop(rt.storage, None)
                self._history.pop(rt.storage, None)
            for w in self.watchers:
                if w.rt.key == rt.key:
                    w.push(None)  # the resource is gone: its watches end

    def find(self, group: str, version: str, plural: str) -> ResourceType:
        try:
            return self.types[(group, version, plural)]
        except KeyError:
            raise errors.ApiError("NotFound", "the server could not find the requested resource") from None

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    # ---- reads ----
    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            obj = self._objects[rt.storage].get((namespace, name))
            if obj is None:
                raise errors.not_found(rt.plural, rt.group, name)
            return _as_version(copy.deepcopy(obj), rt)

    def snapshot(self, rt: ResourceType, rv: int | None) -> tuple[dict[Key, dict[str, Any]], int]:
        """The objects of `rt` as they were at `rv` (now when None): 410 Expired past the kept history."""
        with self._lock:
            current = dict(self._objects[rt.storage])
            if rv is None or rv >= self._rv:
                return _all_as_version(copy.deepcopy(current), rt), self._rv
            if rv < self._compacted[rt.storage]:
                raise errors.expired(f"too old resource version: {rv} ({self._compacted[rt.storage]})")
            for change in reversed(self._history[rt.storage]):
                if change.rv <= rv:
                    break
                key = objects.key_of(change.obj)
                if change.type == "ADDED":
                    current.pop(key, None)
                else:
                    assert change.prev is not None
                    current[key] = change.prev
            return _all_as_version(copy.deepcopy(current), rt), rv

    # ---- writes ----
    def _commit(self, rt: ResourceType, kind: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = objects.key_of(obj)
        if kind == "DELETED":
            self._objects[rt.storage].pop(key, None)
        else:
            self._objects[rt.storage][key] = obj
        change = Change(self._rv, kind, copy.deepcopy(obj), copy.deepcopy(prev) if prev else None)
        history = self._history[rt.storage]
        history.append(change)
        while len(history) > self.history_size:
            self._compacted[rt.storage] = history.popleft().rv
        for w in self.watchers:
            if w.rt.storage == rt.storage and change.rv > w.after:
                event = w.translate(change)
                if event is not None:
                    w.push((event[0], copy.deepcopy(event[1])))

    def create(
        self, rt: ResourceType, namespace: str, body: dict[str, Any], keep_status: bool = False
    ) -> dict[str, Any]:
        """POST: 409 AlreadyExists on a taken name; `keep_status` lets a test seed a status directly."""
        with self._lock:
            obj = objects.prepare_create(rt, namespace, body, keep_status)
            if rt.namespaced and ("", obj["metadata"]["namespace"]) not in self._objects[("", "namespaces")]:
                raise errors.not_found("namespaces", "", obj["metadata"]["namespace"])
            if objects.key_of(obj) in self._objects[rt.storage]:
                raise errors.already_exists(rt.plural, rt.group, obj["metadata"]["name"])
            if rt.key == CRD.key and not keep_status:
                # No controller runs here: the names are accepted and the resource served at once, and the
                # conditions a client waits for (Established) say so, as the apiextensions controller would.
                obj["status"] = crd_status(obj)
            self._commit(rt, "ADDED", obj, None)
            if rt.key == CRD.key:
                for served in crd_types(obj):
                    self.register(served)
            return copy.deepcopy(obj)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Read-modify-write under the lock: `change` maps the stored object to the requested one; the status
        subresource rules and resourceVersion preconditions are applied here."""
        with self._lock:
            old = self.get(rt, namespace, name)
            wanted = change(copy.deepcopy(old))
            new = objects.prepare_update(rt, old, wanted, subresource)
            if new == old:
                return old  # a no-op write keeps the resourceVersion and sends no event, as on the real server
            self._commit(rt, "MODIFIED", new, old)
            if rt.key == CRD.key:  # an applied CRD may serve a new version
                for served in crd_types(new):
                    self.register(served)
            return copy.deepcopy(new)

    def delete(
        self, rt: ResourceType, namespace: str, name: str, preconditions: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            obj = self.get(rt, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"].get("uid"):
                raise errors.conflict(
                    rt.plural,
                    rt.group,
                    name,
                    "Precondition failed: UID in precondition: "
                    f"{pre['uid']}, UID in object meta: {obj['metadata'].get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"].get("resourceVersion"):
                raise errors.conflict(
                    rt.plural,
                    rt.group,
                    name,
                    "Precondition failed: ResourceVersion in "
                    f"precondition: {pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{obj['metadata'].get('resourceVersion')}",
                )
            if rt.key == ("", "v1", "namespaces"):
                for other in list(self.types.values()):
                    if other.namespaced:
                        for key in [k for k in self._objects[other.storage] if k[0] == name]:
                            self._commit(
                                other,
                                "DELETED",
                                copy.deepcopy(self._objects[other.storage][key]),
                                self._objects[other.storage][key],
                            )
            prev = copy.deepcopy(obj)
            self._commit(rt, "DELETED", obj, prev)
            if rt.key == CRD.key:
                for served in crd_types(obj):
                    self.unregister(served)
            return copy.deepcopy(obj)

    # ---- watches ----
    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: list[Requirement],
        fields: FieldSelector,
        rv: int | None,
        loop: asyncio.AbstractEventLoop,
        initial_events: bool = False,
    ) -> Watcher:
        """Open a watch from `rv` (None, 0 or `initial_events`: synthetic ADDED events for the current state
        first; with `initial_events`, then a bookmark annotated k8s.io/initial-events-end)."""
        with self._lock:
            w = Watcher(rt, namespace, labels, fields, loop, after=max(rv or 0, self._rv))
            if rv is None or rv == 0 or initial_events:
                for obj in sorted(self._objects[rt.storage].values(), key=lambda o: objects.key_of(o)):
                    if w.selects(obj):
                        w.push(("ADDED", copy.deepcopy(obj)))
                if initial_events:  # the WatchList protocol: a bookmark marks the end of the initial state
                    w.push(self._bookmark(w, {"k8s.io/initial-events-end": "true"}))
            else:
                if rv < self._compacted[rt.storage]:
                    raise errors.expired(f"too old resource version: {rv} ({self._compacted[rt.storage]})")
                for change in self._history[rt.storage]:
                    if change.rv > rv:
                        event = w.translate(change)
                        if event is not None:
                            w.push((event[0], copy.deepcopy(event[1])))
            self.watchers.append(w)
            return w

    def forget(self, w: Watcher) -> None:
        with self._lock:
            if w in self.watchers:
                self.watchers.remove(w)

    def bookmark(self, w: Watcher) -> None:
        """Queue a BOOKMARK at the current resourceVersion behind every event already queued for `w`."""
        with self._lock:
            w.push(self._bookmark(w, None))

    def _bookmark(self, w: Watcher, annotations: dict[str, str] | None) -> tuple[str, dict[str, Any]]:
        """A bookmark object: the watched kind with only metadata.resourceVersion (and annotations)."""
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if annotations:
            meta["annotations"] = annotations
        return ("BOOKMARK", {"kind": w.rt.kind, "apiVersion": w.rt.api_version, "metadata": meta})

    def drop_watches(self, abrupt: bool = False) -> int:
        """End every open watch stream (a test hook for "the server dropped my watch"): cleanly (the chunked
        response ends, as at timeoutSeconds) or abruptly (the connection is cut mid-stream, as in a crash)."""
        with self._lock:
            for w in self.watchers:
                w.push(("ABORT", {}) if abrupt else None)
            return len(self.watchers)

    def compact(self) -> None:
        """Forget all history: any older resourceVersion now answers 410, as after an etcd compaction."""
        with self._lock:
            for key, history in self._history.items():
                history.clear()
                self._compacted[key] = self._rv


def _as_version(obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
    """An object (a copy) as the version `rt` serves it: the schemas of a mesh's versions are the same, so the
    conversion is the apiVersion (a CRD's `conversion: None` strategy)."""
    if "apiVersion" in obj:
        obj["apiVersion"] = rt.api_version
    return obj


def _all_as_version(objs: dict[Key, dict[str, Any]], rt: ResourceType) -> dict[Key, dict[str, Any]]:
    for obj in objs.values():
        _as_version(obj, rt)
    return objs
