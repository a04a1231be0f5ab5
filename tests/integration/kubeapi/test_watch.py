"""Watch: events after a resourceVersion, selectors, bookmarks, 410 Expired, and the faults tests inject."""

from __future__ import annotations

import threading
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.conftest import wait_for
from tests.integration.kubeapi.conftest import MERGE, RawWatch, pod, raw
from tests.kubeapi import KubeApiServer

PODS = "/api/v1/namespaces/default/pods"


def _watch() -> Any:
    """The official client's watch helper (untyped upstream)."""
    return kubernetes.watch.Watch()  # type: ignore[no-untyped-call]


def _types(w: RawWatch, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        event = w.next()
        assert event is not None
        out.append((event["type"], event["object"]["metadata"].get("name", "")))
    return out


def test_a_watch_without_resource_version_starts_with_the_current_state(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a"))
    w = RawWatch(api, f"{PODS}?watch=true")
    try:
        assert w.resp.status == 200 and w.resp.getheader("Transfer-Encoding") == "chunked"
        assert _types(w, 1) == [("ADDED", "a")]
        v1.create_namespaced_pod("default", pod("b"))
        v1.patch_namespaced_pod("b", "default", {"metadata": {"labels": {"x": "1"}}}, _content_type=MERGE)
        v1.delete_namespaced_pod("a", "default")
        assert _types(w, 3) == [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "a")]
    finally:
        w.close()


def test_the_official_client_resumes_from_a_resource_version(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("old"))
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", pod("new"))
    v1.delete_namespaced_pod("old", "default")
    events = _watch().stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1)
    seen = [(e["type"], e["object"].metadata.name) for e in events]
    assert seen == [("ADDED", "new"), ("DELETED", "old")]


def test_deleted_events_carry_the_deletion_resource_version(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    created = v1.create_namespaced_pod("default", pod("a"))
    w = RawWatch(api, f"{PODS}?watch=true&resourceVersion={created.metadata.resource_version}")
    try:
        v1.delete_namespaced_pod("a", "default")
        event = w.next()
        assert event is not None and event["type"] == "DELETED"
        assert int(event["object"]["metadata"]["resourceVersion"]) > int(created.metadata.resource_version)
    finally:
        w.close()


def test_an_object_leaving_the_selector_is_deleted_for_that_watch(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    w = RawWatch(api, f"{PODS}?watch=1&fieldSelector=spec.nodeName%3Dnode-1&labelSelector=app%20in%20(web)")
    try:
        v1.create_namespaced_pod("default", pod("other-node", node="node-2", labels={"app": "web"}))
        v1.create_namespaced_pod("default", pod("mine", labels={"app": "web"}))
        assert _types(w, 1) == [("ADDED", "mine")]
        v1.patch_namespaced_pod("mine", "default", {"metadata": {"labels": {"app": "db"}}}, _content_type=MERGE)
        v1.patch_namespaced_pod("mine", "default", {"metadata": {"labels": {"app": "web"}}}, _content_type=MERGE)
        assert _types(w, 2) == [("DELETED", "mine"), ("ADDED", "mine")]
    finally:
        w.close()


def test_bookmarks_carry_only_a_resource_version_and_the_client_follows_them(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespace({"metadata": {"name": "elsewhere"}})  # moves the global resourceVersion
    w = RawWatch(api, f"{PODS}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}")
    try:
        event = w.next()
        assert event is not None and event["type"] == "BOOKMARK"
        assert event["object"] == {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(api.store.resource_version)},
        }
    finally:
        w.close()
    watch = _watch()
    for event in watch.stream(
        v1.list_namespaced_pod, "default", resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=1
    ):
        if event["type"] == "BOOKMARK":
            break
    assert watch.resource_version == str(api.store.resource_version)
    # without allowWatchBookmarks the server sends none
    assert list(_watch().stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1)) == []


def test_an_expired_resource_version_is_an_error_event_with_status_410(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a"))
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    v1.create_namespaced_pod("default", pod("b"))
    api.compact()
    w = RawWatch(api, f"{PODS}?watch=true&resourceVersion={rv}")
    try:
        assert w.resp.status == 200
        event = w.next()
        assert event is not None and event["type"] == "ERROR"
        assert event["object"]["kind"] == "Status" and event["object"]["code"] == 410
        assert event["object"]["reason"] == "Expired" and "too old resource version" in event["object"]["message"]
        assert w.next() is None  # and the stream ends
    finally:
        w.close()
    with pytest.raises(ApiException) as err:
        list(_watch().stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1))
    assert err.value.status == 410


def test_history_is_bounded(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    for i in range(api.store.history_size + 1):
        v1.create_namespaced_event("default", {"metadata": {"name": f"e{i}"}, "involvedObject": {}})
    with RawWatch(api, f"/api/v1/namespaces/default/events?watch=true&resourceVersion={rv}") as w:
        event = w.next()
    assert event is not None and event["object"]["code"] == 410


def test_timeout_seconds_ends_the_stream(api: KubeApiServer) -> None:
    with RawWatch(api, f"{PODS}?watch=true&timeoutSeconds=1") as w:
        assert w.next() is None
    status, body = raw(api, "GET", f"{PODS}?watch=true&timeoutSeconds=0.5")
    assert (status, body["reason"]) == (400, "BadRequest")


def _consume(api: KubeApiServer, path: str, out: list[Any]) -> threading.Thread:
    def run() -> None:
        with RawWatch(api, path) as w:
            while (event := w.next()) is not None:
                out.append(event)
        out.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_dropping_every_watch_ends_their_streams(api: KubeApiServer) -> None:
    first: list[Any] = []
    second: list[Any] = []
    threads = [_consume(api, f"{PODS}?watch=true", first), _consume(api, "/api/v1/namespaces?watch=true", second)]
    wait_for(lambda: len(api.store.watchers) == 2, 5, "two open watches")
    assert api.drop_watches() == 2
    for t in threads:
        t.join(timeout=5)
    assert first == [None] and len(second) == 5 and second[-1] is None
    wait_for(lambda: not api.store.watchers, 5, "the server to forget the watches")


def test_a_restart_cuts_watches_and_keeps_or_drops_state(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a"))
    events: list[Any] = []
    thread = _consume(api, f"{PODS}?watch=true", events)
    wait_for(lambda: events, 5, "the initial event")
    port = api.port
    api.restart(keep_state=True)
    thread.join(timeout=5)
    assert events[-1] is None and api.port == port
    assert [p.metadata.name for p in v1.list_namespaced_pod("default").items] == ["a"]
    api.restart(keep_state=False)
    assert v1.list_namespaced_pod("default").items == []
    assert raw(api, "GET", "/api/v1/namespaces/default")[0] == 200  # a fresh cluster has its default namespaces
