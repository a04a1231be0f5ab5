"""The faults tests inject: cut watches, outages, a wiped cluster; plus bearer-token auth and WatchList."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.conftest import wait_for
from tests.integration.kubeapi.conftest import RawWatch, pod, raw
from tests.kubeapi import KubeApiServer

PODS = "/api/v1/namespaces/default/pods"


def _client_watch(api: KubeApiServer, out: list[Any], **kwargs: Any) -> threading.Thread:
    """The official client's watch in a thread; records event types, then END or the exception's repr."""
    v1 = api.core_v1()

    def run() -> None:
        try:
            watch: Any = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            for event in watch.stream(v1.list_namespaced_pod, "default", timeout_seconds=5, **kwargs):
                out.append(event["type"])
            out.append("END")
        except Exception as exc:  # what the client raises is what the test looks at
            out.append(type(exc).__name__)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("abrupt", "ending"), [(False, "END"), (True, "ProtocolError")])
def test_a_dropped_watch_ends_cleanly_or_breaks(api: KubeApiServer, abrupt: bool, ending: str) -> None:
    api.core_v1().create_namespaced_pod("default", pod("a"))
    out: list[Any] = []
    thread = _client_watch(api, out)
    wait_for(lambda: out == ["ADDED"], 5, "the initial event")
    assert api.drop_watches(abrupt=abrupt) == 1
    thread.join(timeout=5)
    assert out == ["ADDED", ending]


def test_an_outage_refuses_connections_until_the_server_is_up_again(api: KubeApiServer) -> None:
    api.core_v1().create_namespaced_pod("default", pod("a"))
    out: list[Any] = []
    thread = _client_watch(api, out)
    wait_for(lambda: out == ["ADDED"], 5, "the initial event")
    api.down()
    thread.join(timeout=5)
    assert out == ["ADDED", "ProtocolError"]  # a restart cuts watches mid-stream
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{api.url}/api", timeout=2)
    api.up()
    assert [p.metadata.name for p in api.core_v1().list_namespaced_pod("default").items] == ["a"]


def test_a_wiped_cluster_expires_every_old_resource_version(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    v1.create_namespaced_pod("default", pod("a"))
    rv = v1.list_namespaced_pod("default").metadata.resource_version
    api.restart(keep_state=False)
    with RawWatch(api, f"{PODS}?watch=true&resourceVersion={rv}") as w:
        event = w.next()
    assert event is not None and (event["type"], event["object"]["code"]) == ("ERROR", 410)
    fresh = v1.list_namespaced_pod("default")
    assert fresh.items == [] and int(fresh.metadata.resource_version) > int(rv)


def test_a_watch_from_a_future_resource_version_sees_only_later_changes(api: KubeApiServer) -> None:
    v1 = api.core_v1()
    future = api.store.resource_version + 2
    with RawWatch(api, f"{PODS}?watch=true&resourceVersion={future}") as w:
        wait_for(lambda: api.store.watchers, 5, "the watch to open")
        for name in ("one", "two", "three"):  # resourceVersions future-1, future, future+1
            v1.create_namespaced_pod("default", pod(name))
        event = w.next()
    assert event is not None and event["object"]["metadata"]["name"] == "three"


def test_watch_list_sends_the_state_then_an_initial_events_end_bookmark(api: KubeApiServer) -> None:
    api.core_v1().create_namespaced_pod("default", pod("a"))
    query = "watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
    with RawWatch(api, f"{PODS}?{query}") as w:
        first, second = w.next(), w.next()
    assert first is not None and first["type"] == "ADDED"
    assert second is not None and second["type"] == "BOOKMARK"
    assert second["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    status, body = raw(api, "GET", f"{PODS}?watch=true&sendInitialEvents=true")
    assert (status, body["reason"]) == (422, "Invalid")


def test_a_bearer_token_is_required_when_set() -> None:
    with KubeApiServer(bearer_token="s3cret") as api:
        status, body = raw(api, "GET", "/api/v1/namespaces")
        assert (status, body["reason"], body["code"]) == (401, "Unauthorized", 401)
        assert len(api.core_v1().list_namespace().items) == 4  # the client sends the token it was given
        anonymous = kubernetes.client.Configuration()
        anonymous.host = api.url
        with pytest.raises(ApiException) as err:
            kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(anonymous)).list_namespace()
        assert err.value.status == 401


@pytest.mark.asyncio
async def test_an_aiohttp_client_reads_the_stream_line_by_line(api: KubeApiServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{api.url}/api/v1/namespaces?watch=true&timeoutSeconds=1") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
            names = [json.loads(line)["object"]["metadata"]["name"] async for line in resp.content]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
