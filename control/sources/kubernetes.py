"""The `kubernetes` source: the mesh's kinds as the API server holds them, listed and watched.

Each resource is listed and watched in a thread of its own (`control.sources.watching`: the official client
blocks); updates reach the event loop through `call_soon_threadsafe` and a queue, so the loop never waits on
the network. The source remembers the last object the server reported for every key, which makes it
idempotent: a relist (after 410 Gone, a restart of the server, an outage) is compared with what is known and
only what changed is reported, as upserts, and what vanished meanwhile as deletes; a replayed watch event
with a resourceVersion already seen is dropped. Known objects are never forgotten to start over.

The first sink call carries the complete initial state (every resource listed, or found not served), so the
store's `synced` means "listed everything". Later calls carry whatever arrived since the last one, one batch
per object, whose origin (`kubernetes: Pod ns/name`) is what store errors and Events are attached to.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from control.model.fields import ObjectKey
from control.sources.base import Sink, SourceBatch
from control.sources.kube_api import CONTROL_RESOURCES, PODS, Resource
from control.sources.watching import Changed, Key, Listed, ResourceWatch, Update, key_of

log = logging.getLogger(__name__)


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class KubeSource:
    """Lists and watches `resources` through the clients `client_factory` makes (one per thread)."""

    name = "kubernetes"

    def __init__(
        self,
        client_factory: Callable[[], Any],
        resources: Sequence[Resource] = CONTROL_RESOURCES,
        pod_field_selector: str | None = None,
        timeout_seconds: int = 60,
        backoff: tuple[float, float] = (0.2, 10.0),
        missing_retry: float = 30.0,
    ) -> None:
        self.client_factory = client_factory
        self.resources = tuple(resources)
        self.pod_field_selector = pod_field_selector
        """The agent's `spec.nodeName=<node>`: it needs only its own node's pods."""
        self.timeout_seconds = timeout_seconds
        self.backoff = backoff
        self.missing_retry = missing_retry
        self.known: dict[Resource, dict[Key, dict[str, Any]]] = {r: {} for r in self.resources}
        """The last object the server reported per resource and key: kept across relists and restarts."""
        self.missing: set[Resource] = set()
        """Resources the server does not serve (their CRD is not installed)."""
        self._started = False

    # ---- what the source knows, for Events and status write-back ----
    def origin(self, resource: Resource, key: Key) -> str:
        namespace, name = key
        return (
            f"kubernetes: {resource.label} {namespace}/{name}" if namespace else f"kubernetes: {resource.label} {name}"
        )

    def lookup(self, origin: str) -> tuple[Resource, dict[str, Any]] | None:
        """The object (and its resource) an origin names, while the server holds it."""
        for resource, objects in self.known.items():
            prefix = f"kubernetes: {resource.label} "
            if origin.startswith(prefix):
                ref = origin[len(prefix) :]
                namespace, _, name = ref.rpartition("/")
                obj = objects.get((namespace, name))
                if obj is not None:
                    return resource, obj
        return None

    # ---- the loop ----
    async def run(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Update] = asyncio.Queue()

        def emit(update: Update) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, update)
            except RuntimeError:  # the loop is closed: the process is ending
                pass

        watches = [
            ResourceWatch(
                self.client_factory(), r, emit,
                field_selector=self.pod_field_selector if r == PODS else None,
                timeout_seconds=self.timeout_seconds, backoff=self.backoff, missing_retry=self.missing_retry,
            )
            for r in self.resources
        ]  # fmt: skip
        threads = [threading.Thread(target=w.run, name=f"watch-{w.resource.label}", daemon=True) for w in watches]
        for thread in threads:
            thread.start()
        unlisted = set(self.resources)
        # What changed since the last sink call: held back until every resource has been listed in this run.
        pending: list[SourceBatch] = []
        try:
            while True:
                updates = [await queue.get()]
                while not queue.empty():
                    updates.append(queue.get_nowait())
                for update in updates:
                    pending.extend(self._apply(update))
                    if isinstance(update, Listed):
                        unlisted.discard(update.resource)
                if unlisted:
                    continue  # the first call must hold everything; later ones only what changed
                batches, pending = pending, []
                if not self._started:
                    self._started = True
                    sink(self._everything())
                elif batches:
                    sink(batches)
        finally:
            for w in watches:
                w.close()
            # Threads end promptly (their streams are cut); a daemon that does not is left to the process end.
            await asyncio.to_thread(_join, threads)

    def _everything(self) -> list[SourceBatch]:
        return [self._upsert(r, key, obj) for r, objects in self.known.items() for key, obj in sorted(objects.items())]

    def _upsert(self, resource: Resource, key: Key, obj: dict[str, Any]) -> SourceBatch:
        return SourceBatch(self.origin(resource, key), upserts=(obj,))

    def _delete(self, resource: Resource, key: Key) -> list[SourceBatch]:
        out = [SourceBatch(self.origin(resource, key), deletes=(ObjectKey(resource.kind, *key),))]
        # Two groups may serve one kind (security.istio.io and security.meshlet.io): when the object in force
        # goes, its namesake of the other group, if any, takes over.
        for other, objects in self.known.items():
            if other != resource and other.kind == resource.kind and key in objects:
                out.append(self._upsert(other, key, objects[key]))
        return out

    def _apply(self, update: Update) -> list[SourceBatch]:
        """Record `update`; returns the batches that tell the store what changed."""
        resource = update.resource
        known = self.known[resource]
        if isinstance(update, Listed):
            if update.missing:
                self.missing.add(resource)
            else:
                self.missing.discard(resource)
            out: list[SourceBatch] = []
            for key, obj in sorted(update.objects.items()):
                if key not in known or _rv(known[key]) != _rv(obj) or not _rv(obj):
                    known[key] = obj
                    out.append(self._upsert(resource, key, obj))
            for key in sorted(set(known) - set(update.objects)):
                del known[key]
                out.extend(self._delete(resource, key))
            return out
        assert isinstance(update, Changed)
        key = key_of(update.object)
        if update.type == "DELETED":
            if known.pop(key, None) is None:
                return []
            return self._delete(resource, key)
        old = known.get(key)
        if old is not None and _rv(old) == _rv(update.object) and _rv(old):
            return []  # a replay of what a relist already reported
        known[key] = update.object
        return [self._upsert(resource, key, update.object)]


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=2.0)
