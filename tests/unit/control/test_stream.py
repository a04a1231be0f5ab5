"""The config hub: each proxy gets a snapshot then deltas; a proxy that stops reading is cut off alone."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web

from control.metrics import ControlMetrics
from control.model.fields import ObjectKey
from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.store import ConfigStore
from control.stream import ConfigHub, ProxyConnection

pytestmark = pytest.mark.asyncio


class FakeTransport:
    """Records that the hub aborted the connection."""

    aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeSocket:
    """Stands in for a WebSocketResponse; `stuck` never completes a send (a proxy that stopped reading)."""

    def __init__(self, stuck: bool = False) -> None:
        self.stuck = stuck
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    async def send_str(self, text: str) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(json.loads(text))

    async def close(self) -> None:
        self.closed = True


def ns(name: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name}}


def pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "a"},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "podIP": ip},
    }


@contextlib.asynccontextmanager
async def proxy(node: str) -> AsyncIterator[tuple[ConfigStore, ConfigHub, ProxyConnection, FakeSocket, ControlMetrics]]:
    """A store holding pod p1, a hub, and one proxy connection whose sender runs for the body."""
    metrics = ControlMetrics()
    store = ConfigStore(MeshSettings(), metrics)
    store.apply([SourceBatch("f", (ns("a"), pod("p1", "10.0.0.1")))])
    hub = ConfigHub(store, metrics)
    sock, conn = FakeSocket(), ProxyConnection(node, "x")
    hub.connections.add(conn)
    task = asyncio.create_task(hub._send_loop(conn, cast(web.WebSocketResponse, sock)))
    try:
        yield store, hub, conn, sock, metrics
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def idle(store: ConfigStore, conn: ProxyConnection) -> bool:
    """The connection's sender is parked with nothing to send: it has sent the store's version and cleared
    the wake-up flag, which it does only right before it waits (and a new version sets it again). What the
    sender has sent by then is all it will send until something wakes it."""
    return conn.sent_version == store.version and not conn.dirty.is_set()


async def test_slow_proxy_is_disconnected_and_never_delays_the_others() -> None:
    metrics = ControlMetrics()
    store = ConfigStore(MeshSettings(), metrics)
    store.apply([SourceBatch("f", (ns("a"), pod("p1", "10.0.0.1")))])
    hub = ConfigHub(store, metrics, send_timeout=0.2)
    fast, slow = FakeSocket(), FakeSocket(stuck=True)
    conns = [ProxyConnection("fast", "x"), ProxyConnection("slow", "y")]
    hub.connections.update(conns)
    transport = FakeTransport()
    tasks = [
        asyncio.create_task(hub._send_loop(conns[0], cast(web.WebSocketResponse, fast))),
        asyncio.create_task(hub._send_loop(conns[1], cast(web.WebSocketResponse, slow), transport.abort)),
    ]
    try:
        await until(lambda: len(fast.sent) == 1)
        assert fast.sent[0]["type"] == "snapshot" and fast.sent[0]["version"] == 1
        store.apply([SourceBatch("g", (pod("p2", "10.0.0.2"),))])
        await until(lambda: len(fast.sent) == 2)
        delta = fast.sent[1]
        assert (delta["type"], delta["base"], delta["version"]) == ("delta", 1, 2)
        assert [w["name"] for w in delta["upsert"]["workloads"]] == ["p2"] and delta["remove"] == {}
        await until(lambda: transport.aborted)  # aborted: a graceful close would wait on the unread buffer
        assert metrics.slow_disconnects._value.get() == 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_versions_a_proxy_missed_are_coalesced_into_one_delta() -> None:
    async with proxy("n") as (store, hub, conn, sock, metrics):
        await until(lambda: len(sock.sent) == 1)
        # Three versions in a row, before the sender gets to run again.
        store.apply([SourceBatch("g", (pod("p2", "10.0.0.2"),))])
        store.apply([SourceBatch("h", (pod("p3", "10.0.0.3"),))])
        store.apply([SourceBatch("f", (ns("a"),), deletes=(ObjectKey("Pod", "a", "p1"),))])
        await until(lambda: len(sock.sent) == 2)
        delta = sock.sent[1]
        assert (delta["base"], delta["version"]) == (1, 4)
        assert delta["remove"] == {"workloads": [w["uid"] for w in sock.sent[0]["resources"]["workloads"]]}
        assert sorted(w["name"] for w in delta["upsert"]["workloads"]) == ["p2", "p3"]
        await until(lambda: idle(store, conn))
        assert len(sock.sent) == 2


async def test_nack_of_an_older_version_sends_the_current_one_whole_at_once() -> None:
    async with proxy("n1") as (store, hub, conn, sock, metrics):
        store.apply([SourceBatch("g", (pod("p2", "10.0.0.2"),))])
        store.apply([SourceBatch("h", (pod("p3", "10.0.0.3"),))])
        await until(lambda: sock.sent and sock.sent[-1]["version"] == 3)
        sent = len(sock.sent)
        # The proxy rejected version 2 after version 3 (built on 2) was already on its way.
        hub._on_reply(conn, json.dumps({"type": "nack", "version": 2, "error": "bad p2"}))
        await until(lambda: len(sock.sent) == sent + 1)
        assert sock.sent[-1]["type"] == "snapshot" and sock.sent[-1]["version"] == 3


async def test_after_a_nack_the_next_version_is_a_snapshot() -> None:
    async with proxy("n1") as (store, hub, conn, sock, metrics):
        store.apply([SourceBatch("g", (pod("p2", "10.0.0.2"),))])
        await until(lambda: sock.sent and sock.sent[-1]["version"] == 2)
        hub._on_reply(conn, json.dumps({"type": "nack", "version": 2, "error": "bad p2"}))
        assert conn.last_error == "bad p2" and metrics.rejects.labels("n1")._value.get() == 1
        await until(lambda: idle(store, conn))
        sent = len(sock.sent)  # the rejected version is not pushed again
        assert sock.sent[-1]["version"] == 2
        store.apply([SourceBatch("h", (pod("p3", "10.0.0.3"),))])
        await until(lambda: len(sock.sent) == sent + 1)
        assert sock.sent[-1]["type"] == "snapshot" and sock.sent[-1]["version"] == 3
        hub._on_reply(conn, json.dumps({"type": "ack", "version": 3}))
        assert conn.last_error is None and conn.acked_version == 3


async def test_every_message_names_the_root_namespaces() -> None:
    async with proxy("n") as (store, hub, conn, sock, metrics):
        await until(lambda: len(sock.sent) == 1)
        store.apply([SourceBatch("g", (pod("p2", "10.0.0.2"),))])
        await until(lambda: len(sock.sent) == 2)
        assert [(m["type"], m["mesh"]) for m in sock.sent] == [
            ("snapshot", {"rootNamespaces": ["meshlet-system"]}),
            ("delta", {"rootNamespaces": ["meshlet-system"]}),
        ]
    compat = ConfigStore(MeshSettings(root_namespace="platform", istio_compat=True))
    assert ConfigHub(compat, ControlMetrics()).mesh == {"rootNamespaces": ["platform", "istio-system"]}


async def test_a_proxy_that_applies_other_roots_is_warned_about() -> None:
    compat = ConfigStore(MeshSettings(istio_compat=True))
    hub = ConfigHub(compat, ControlMetrics())
    new, old, unacked = ProxyConnection("new", "a"), ProxyConnection("old", "b"), ProxyConnection("late", "c")
    hub.connections.update((new, old, unacked))
    both = {"rootNamespaces": ["meshlet-system", "istio-system"]}
    hub._on_reply(new, json.dumps({"type": "ack", "version": 1, "mesh": both}))
    hub._on_reply(old, json.dumps({"type": "ack", "version": 1}))  # a ztunnel before the field
    assert new.root_namespaces == ("meshlet-system", "istio-system") and old.root_namespaces is None
    [warning] = hub.root_warnings()
    assert warning["object"] == "ztunnel of node old" and "upgrade it" in warning["message"]
    hub._on_reply(new, json.dumps({"type": "ack", "version": 2, "mesh": {"rootNamespaces": ["x"]}}))
    assert [w["object"] for w in hub.root_warnings()] == ["ztunnel of node new", "ztunnel of node old"]
    # With the default root an old ztunnel applies what it always did: nothing to say.
    plain = ConfigHub(ConfigStore(MeshSettings()), ControlMetrics())
    plain.connections.add(old)
    assert plain.root_warnings() == []
