"""What control tells the API server back: an Event for each rejected object, and HTTPRoute status.

Both follow every store update (`KubeReporter.sink` wraps `ConfigStore.apply`) and are decided on the event
loop from what the store and the kubernetes source already hold; the writes themselves run in one worker
thread, in order, and a failed write is only logged (the mesh keeps working without them).

- Events: a rejected object (a store error naming an object) gets one Warning Event, reason `InvalidConfig`,
  with the reason as its message, once per distinct error: `kubectl describe` shows why the object is not in
  force. The error stays in /debug/status and the config-errors metric as for any source.
- HTTPRoute status: the Gateway API conditions of `control.model.routes.route_status`, per parent, written to
  `status.parents` with our controllerName through the status subresource (a JSON merge patch). Entries of
  other controllers are kept as they are; a write happens only when our entries would change (a condition's
  lastTransitionTime moves only when its status does), so a steady mesh writes nothing.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from control.model.kube import Service
from control.model.routes import HTTPRoute, route_status
from control.sources.base import SourceBatch
from control.sources.kube_api import MERGE_PATCH, request_json
from control.sources.kubernetes import KubeSource
from control.store import ConfigStore
from meshlet_contracts.routes import ParentStatus

log = logging.getLogger(__name__)
CONTROLLER = "meshlet.io/control"
"""Our controllerName in HTTPRoute status: the entries we own, and the only ones we touch."""
REASON = "InvalidConfig"
COMPONENT = "meshlet-control"
MAX_MESSAGE = 1024


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_for(obj: dict[str, Any], message: str) -> dict[str, Any]:
    """A core/v1 Warning Event about `obj` (cluster-scoped objects' Events live in `default`, as kubectl's)."""
    meta = obj.get("metadata") or {}
    now = _now()
    involved = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    if meta.get("namespace"):
        involved["namespace"] = meta["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{secrets.token_hex(8)}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": involved,
        "type": "Warning",
        "reason": REASON,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": CONTROLLER,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _parent_ref(status: ParentStatus) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "group": "",
        "kind": "Service",
        "name": status.parent.name,
        "namespace": status.parent.namespace,
    }
    if status.parent.port is not None:
        ref["port"] = status.parent.port
    return ref


def _steady(entries: Sequence[Any]) -> list[Any]:
    """Our entries without lastTransitionTime: what decides whether a write is needed."""
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in entry.get("conditions") or []
            if isinstance(c, dict)
        ]
        out.append({**entry, "conditions": conditions})
    return out


def parents_status(raw: dict[str, Any], statuses: Sequence[ParentStatus]) -> tuple[list[Any], list[Any]]:
    """(our entries as they should be, the whole `status.parents` to write) for the route `raw`."""
    current = (raw.get("status") or {}).get("parents") or []
    current = [p for p in current if isinstance(p, dict)]
    ours_now = [p for p in current if p.get("controllerName") == CONTROLLER]
    generation = (raw.get("metadata") or {}).get("generation")
    ours = []
    for status in statuses:
        ref = _parent_ref(status)
        before: dict[str, Any] = next((p for p in ours_now if p.get("parentRef") == ref), {})
        old = {c.get("type"): c for c in before.get("conditions") or [] if isinstance(c, dict)}
        conditions = []
        for cond in status.conditions:
            prev = old.get(cond.type) or {}
            same = prev.get("status") == cond.status and prev.get("lastTransitionTime")
            condition = {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": prev["lastTransitionTime"] if same else _now(),
            }
            if generation is not None:
                condition["observedGeneration"] = generation
            conditions.append(condition)
        ours.append({"parentRef": ref, "controllerName": CONTROLLER, "conditions": conditions})
    others = [p for p in current if p.get("controllerName") != CONTROLLER]
    return ours, others + ours


class KubeReporter:
    """Applies batches to the store, then writes Events and route status for what changed."""

    def __init__(self, client_factory: Callable[[], Any], store: ConfigStore, source: KubeSource) -> None:
        self.client_factory = client_factory
        self.store = store
        self.source = source
        self._client: Any = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kube-writes")
        self._reported: dict[str, set[str]] = {}
        """Origin -> error reasons already told as Events (told again only after the object was fixed)."""
        self._written: dict[tuple[str, str], tuple[str, list[Any]]] = {}
        """Route -> (the resourceVersion it had, our entries) of the last status write not yet seen back."""

    def sink(self, batches: Sequence[SourceBatch]) -> None:
        self.store.apply(batches)
        try:
            self._events()
            self._statuses()
        except Exception:  # reporting is a courtesy: it must never stop the store's updates
            log.exception("reporting to the API server failed")

    def close(self) -> None:
        self._writer.shutdown(wait=False, cancel_futures=True)

    def _write(self, what: str, method: str, path: str, body: Any, content_type: str = "application/json") -> None:
        def run() -> None:
            try:
                if self._client is None:
                    self._client = self.client_factory()
                request_json(self._client, method, path, body=body, content_type=content_type, timeout=(5.0, 15.0))
            except Exception as exc:
                log.warning("writing %s failed: %s", what, exc)
                if path.endswith("/status"):
                    # Forget the write so the next store update tries again (dict ops are atomic under the GIL).
                    self._written.pop(_route_of(path), None)

        self._writer.submit(run)

    def _events(self) -> None:
        reported: dict[str, set[str]] = {}
        for origin, errors in self.store.errors.items():
            found = self.source.lookup(origin)
            if found is None:
                continue
            _, obj = found
            reasons = {e.reason for e in errors if e.object is not None}
            reported[origin] = reasons
            for reason in sorted(reasons - self._reported.get(origin, set())):
                event = event_for(obj, reason)
                path = f"/api/v1/namespaces/{event['metadata']['namespace']}/events"
                self._write(f"an Event for {origin}", "POST", path, event)
        self._reported = reported

    def _statuses(self) -> None:
        services = {f"{s.namespace}/{s.name}": s for s in self.store.objects.values() if isinstance(s, Service)}
        routes: set[tuple[str, str]] = set()
        for route in [o for o in self.store.objects.values() if isinstance(o, HTTPRoute)]:
            origin = self.store.origin(route.key)
            found = self.source.lookup(origin) if origin else None
            if origin is None or found is None or self.store.errors.get(origin):
                continue  # not from the API server, or its latest version is rejected (its Event says why)
            resource, raw = found
            key = (route.namespace, route.name)
            routes.add(key)
            ours, parents = parents_status(raw, route_status(route, services))
            current = [p for p in (raw.get("status") or {}).get("parents") or [] if isinstance(p, dict)]
            steady = _steady(ours)
            rv = str((raw.get("metadata") or {}).get("resourceVersion") or "")
            if _steady([p for p in current if p.get("controllerName") == CONTROLLER]) == steady:
                continue
            if self._written.get(key) == (rv, steady):
                continue  # written already; the watch has not brought it back yet
            self._written[key] = (rv, steady)
            path = resource.object_path(route.namespace, route.name) + "/status"
            self._write(
                f"the status of HTTPRoute {origin}", "PATCH", path, {"status": {"parents": parents}}, MERGE_PATCH
            )
        for key in set(self._written) - routes:
            del self._written[key]


def _route_of(path: str) -> tuple[str, str]:
    parts = path.split("/")
    return parts[-4], parts[-2]  # .../namespaces/<ns>/httproutes/<name>/status
