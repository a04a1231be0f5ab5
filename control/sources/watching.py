"""List and watch one resource, in a thread of its own, for as long as the source runs.

The loop is the one every Kubernetes informer runs: list (in pages), then watch from the list's
resourceVersion with bookmarks, and after each watch ends (its `timeoutSeconds`, a dropped connection) watch
again from the last resourceVersion seen, which bookmarks move on even when nothing changes. A watch that
answers 410 Gone (the server no longer has that history: an etcd compaction, a long outage) is followed by a
fresh list; the listing is handed on whole (`Listed`) so the source can tell what changed and what vanished
meanwhile, and never has to forget what it knows first.

Failures never end the loop: an unreachable server is retried with exponential backoff and jitter (0.2 s
doubling to 10 s), and so is a watch that ends at once without news, so an API server that misbehaves costs a
bounded number of requests. A resource the server does not serve (404: its CRD is not installed) counts as
listed and empty, is logged once, and is asked for again every `missing_retry` seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from control.sources.kube_api import Resource, request, request_json, status_reason
from meshlet_contracts.backoff import Backoff

log = logging.getLogger(__name__)
Key = tuple[str, str]
"""(namespace, name); namespace "" for cluster-scoped objects."""


@dataclass(frozen=True, slots=True)
class Listed:
    """Everything the server holds of `resource` now (empty and `missing` when it does not serve it)."""

    resource: Resource
    objects: dict[Key, dict[str, Any]]
    missing: bool = False


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event: ADDED, MODIFIED or DELETED, with the object (apiVersion and kind filled in)."""

    resource: Resource
    type: str
    object: dict[str, Any]


Update = Listed | Changed


class Expired(Exception):
    """The watch's resourceVersion is too old for the server: list again."""


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ResourceWatch:
    """The list+watch loop of one resource; `run` is a thread's body, `close` ends it promptly."""

    def __init__(
        self,
        client: Any,
        resource: Resource,
        emit: Callable[[Update], None],
        field_selector: str | None = None,
        timeout_seconds: int = 60,
        backoff: tuple[float, float] = (0.2, 10.0),
        missing_retry: float = 30.0,
        page_size: int = 500,
    ) -> None:
        self.client = client
        self.resource = resource
        self.emit = emit
        self.field_selector = field_selector
        self.timeout_seconds = timeout_seconds
        self.backoff = Backoff(*backoff, floor=0.5)
        self.missing_retry = missing_retry
        self.page_size = page_size
        self.stop = threading.Event()
        self._response: Any = None
        self._missing = False
        self._failing = False
        self.rv: str | None = None
        """The resourceVersion to watch from: the list's, then each event's; None lists (again)."""

    def close(self) -> None:
        """End the loop; a watch blocked on its stream is cut so the thread ends now, not at its timeout."""
        self.stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception as exc:  # the stream may be closing by itself: nothing else to do
                log.debug("cutting the %s watch: %s", self.resource.label, exc)

    def run(self) -> None:
        self.rv = None
        while not self.stop.is_set():
            try:
                if self.rv is None:
                    self.rv = self._list()
                started = time.monotonic()
                news = self._watch()
                self._recovered()
                if news or time.monotonic() - started >= 1.0:
                    self.backoff.reset()
                else:  # ended at once with nothing to say: never turn that into a busy loop
                    self.stop.wait(self.backoff.next())
            except Expired:
                log.info("%s: resourceVersion %s expired; listing again", self.resource.label, self.rv)
                self.rv = None
            except ApiException as exc:
                if exc.status == 410:  # a list's continue token, or a watch answered 410 before streaming
                    self.rv = None
                elif exc.status == 404:
                    self.rv = None
                    self._not_served(exc)
                else:
                    self._failed(f"HTTP {exc.status}: {status_reason(exc)}")
            except Exception as exc:  # unreachable, cut mid-stream, garbled: all retried the same way
                if self.stop.is_set():
                    break
                self._failed(f"{type(exc).__name__}: {exc}")

    def _not_served(self, exc: ApiException) -> None:
        if not self._missing:
            log.warning(
                "%s (%s) is not served by the API server (%s): is its CRD installed? Asking again every %.0f s",
                self.resource.label, self.resource.api_version, status_reason(exc), self.missing_retry,
            )  # fmt: skip
            self._missing = True
            self.emit(Listed(self.resource, {}, missing=True))
        self.stop.wait(self.missing_retry)

    def _failed(self, reason: str) -> None:
        if not self._failing:  # once per outage, not once per retry
            log.warning("%s: list/watch failed (%s); retrying with backoff", self.resource.label, reason)
            self._failing = True
        self.stop.wait(self.backoff.next())

    def _recovered(self) -> None:
        if self._failing:
            log.info("%s: watching again", self.resource.label)
            self._failing = False

    def _query(self) -> list[tuple[str, str]]:
        return [("fieldSelector", self.field_selector)] if self.field_selector else []

    def _filled(self, obj: dict[str, Any]) -> dict[str, Any]:
        # Items of a list carry neither apiVersion nor kind (the list does): the store needs both.
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        return obj

    def _list(self) -> str:
        objects: dict[Key, dict[str, Any]] = {}
        token = ""
        while True:
            query = [*self._query(), ("limit", str(self.page_size))]
            if token:
                query.append(("continue", token))
            page = request_json(self.client, "GET", self.resource.path, query, timeout=(5.0, 60.0))
            for item in page.get("items") or []:
                obj = self._filled(item)
                objects[key_of(obj)] = obj
            meta = page.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                break
        if self._missing:
            log.info("%s is served now", self.resource.label)
            self._missing = False
        self.emit(Listed(self.resource, objects))
        self.backoff.reset()
        self._recovered()
        return str(meta.get("resourceVersion") or "")

    def _watch(self) -> bool:
        """Watch from `self.rv` until the stream ends, moving `self.rv` on with every event; returns whether any
        event (bookmarks included) arrived. It moves per event, not on return: a stream cut mid-way (a restarted
        server, a dropped connection) raises, and the next watch must resume after the last event delivered,
        not replay every event since the list (old pod states, deleted pods coming back for a moment)."""
        assert self.rv is not None
        query = [
            *self._query(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self.timeout_seconds)),
            ("resourceVersion", self.rv),
        ]
        # The read timeout outlasts the server's own, so only a dead connection trips it.
        response = request(self.client, "GET", self.resource.path, query, timeout=(5.0, self.timeout_seconds + 15.0))
        self._response = response
        news = False
        try:
            if self.stop.is_set():
                return news
            for line in _lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                news = True
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or self.rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.emit(Changed(self.resource, kind, self._filled(obj)))
                self.rv = rv  # after the emit: an event not handed on is asked for again
            return news
        finally:
            self._response = None
            response.release_conn()


def _lines(response: Any) -> Iterator[bytes]:
    """The stream's lines as they arrive (a watch sends one JSON event per line, in chunks of any size)."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
