"""The kubernetes source against the test API server: the initial list, changes, and the faults of a real
cluster (410 Gone, restarts, dropped watches, outages), each ending with the store equal to the server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from control.model.fields import ObjectKey
from control.sources.kube_api import CONTROL_RESOURCES, NAMESPACES, PODS, SECURITY, SERVICES, Resource
from control.sources.kubernetes import KubeSource
from tests.conftest import until
from tests.integration.control.kube_helpers import (
    AMBIENT,
    Recorder,
    call,
    create,
    known_keys,
    kube,
    namespace,
    pod,
    running,
    server_keys,
    service,
    source_for,
)
from tests.kubeapi import KubeApiServer

pytestmark = pytest.mark.asyncio
__all__ = ["kube"]
MESH_AP, ISTIO_AP = SECURITY[0], SECURITY[2]


def _policy(name: str, resource: Resource = MESH_AP, action: str = "ALLOW") -> dict[str, object]:
    return {
        "apiVersion": resource.api_version,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "mesh"},
        "spec": {"action": action, "rules": [{"from": [{"source": {"principals": ["td/ns/a/sa/b"]}}]}]},
    }


def _seed(kube: KubeApiServer) -> None:
    create(kube, NAMESPACES, namespace("mesh", AMBIENT))
    create(kube, PODS, pod("a", "10.0.0.1"))
    create(kube, SERVICES, service("web", "10.96.0.1"))
    create(kube, MESH_AP, _policy("allow"))


def _equal(kube: KubeApiServer, rec: Recorder) -> bool:
    return set(rec.store.objects) == set(server_keys(kube))


async def test_the_first_sink_call_holds_every_kind_listed(kube: KubeApiServer) -> None:
    _seed(kube)
    rec = Recorder()
    async with running(source_for(kube), rec):
        await until(lambda: rec.calls, "the first sink call")
        assert rec.store.synced
        first = {o["kind"] for b in rec.calls[0] for o in b.upserts}
        assert first == {"Namespace", "Pod", "Service", "AuthorizationPolicy"}
        assert set(rec.store.objects) == set(server_keys(kube))
        # Objects from a list carry apiVersion and kind (the list's items do not), and each has its own origin.
        origins = [b.origin for b in rec.calls[0]]
        assert "kubernetes: Pod mesh/a" in origins and "kubernetes: Namespace mesh" in origins
        assert len(origins) == len(set(origins))
    # Only the kinds the model converts are listed: EndpointSlices are not watched.
    paths = {path.split("?")[0] for _, path in kube.requests}
    assert paths == {r.path for r in CONTROL_RESOURCES}


async def test_adds_changes_and_deletes_through_the_api_reach_the_store(kube: KubeApiServer) -> None:
    _seed(kube)
    rec = Recorder()
    async with running(source_for(kube), rec):
        await until(lambda: rec.store.synced, "the initial list")
        call(kube, "POST", "/api/v1/namespaces/mesh/services", service("db", "10.96.0.2"))
        await until(lambda: ObjectKey("Service", "mesh", "db") in rec.store.objects, "the new Service")
        patch = {"spec": {"action": "DENY"}}
        path = "/apis/security.meshlet.io/v1/namespaces/mesh/authorizationpolicies/allow"
        call(kube, "PATCH", path, patch, "application/merge-patch+json")
        key = ObjectKey("AuthorizationPolicy", "mesh", "allow")
        await until(lambda: rec.store.objects[key].action == "DENY", "the changed policy")  # type: ignore[union-attr]
        call(kube, "DELETE", "/api/v1/namespaces/mesh/pods/a")
        await until(lambda: ObjectKey("Pod", "mesh", "a") not in rec.store.objects, "the deleted pod gone")
        assert _equal(kube, rec)
        assert rec.upserts("Service", "db") == 1


async def test_410_gone_relists_and_reports_only_what_changed(kube: KubeApiServer) -> None:
    _seed(kube)
    create(kube, PODS, pod("b", "10.0.0.2"))
    rec = Recorder()
    source = source_for(kube)
    async with running(source, rec):
        await until(lambda: len(kube.store.watchers) == len(CONTROL_RESOURCES), "every resource watched")
        # Changes the source misses while cut off, then a compaction: its next watch's resourceVersion is gone.
        kube.down()
        kube.store.delete(kube.store.types[("", "v1", "pods")], "mesh", "b")
        create(kube, SERVICES, service("db", "10.96.0.2"))
        kube.compact()
        kube.up()
        await until(lambda: _equal(kube, rec), "the store equal to the server after the relist")
        assert known_keys(source) == server_keys(kube)
    # Unchanged objects were not reported again, the new one once, and nothing known was dropped meanwhile.
    assert rec.upserts("Pod", "a") == 1 and rec.upserts("Service", "web") == 1 and rec.upserts("Service", "db") == 1
    deleted = [k for c in rec.calls for b in c for k in b.deletes]
    assert deleted == [ObjectKey("Pod", "mesh", "b")]
    lists = [path for _, path in kube.requests if path.startswith("/api/v1/pods?") and "watch=true" not in path]
    assert len(lists) == 2  # the initial list, and the one after 410 Gone


@pytest.mark.parametrize("fault", ["restart", "drop", "drop-abrupt"])
async def test_a_restarted_server_or_dropped_watch_is_resumed(kube: KubeApiServer, fault: str) -> None:
    _seed(kube)
    rec = Recorder()
    source = source_for(kube)
    async with running(source, rec):
        await until(lambda: len(kube.store.watchers) == len(CONTROL_RESOURCES), "every resource watched")
        # A pod that comes and goes through the watch before the fault: the watch resumes after its events,
        # it must not come back for a moment (a replay from the list's resourceVersion did that).
        create(kube, PODS, pod("c", "10.0.0.3"))
        await until(lambda: ObjectKey("Pod", "mesh", "c") in rec.store.objects, "pod c through the watch")
        call(kube, "DELETE", "/api/v1/namespaces/mesh/pods/c")
        await until(lambda: ObjectKey("Pod", "mesh", "c") not in rec.store.objects, "pod c gone")
        if fault == "restart":
            kube.restart()
        else:
            assert kube.drop_watches(abrupt=fault == "drop-abrupt") == len(CONTROL_RESOURCES)
        call(kube, "POST", "/api/v1/namespaces/mesh/services", service("db", "10.96.0.2"))
        await until(lambda: _equal(kube, rec), "the store equal to the server", timeout=10)
        assert known_keys(source) == server_keys(kube)
        assert rec.upserts("Service", "db") == 1 and rec.upserts("Pod", "a") == 1
        assert rec.upserts("Pod", "c") == 1, "the events before the fault were delivered again"


async def test_an_outage_is_waited_out_with_backoff_then_the_store_catches_up(kube: KubeApiServer) -> None:
    _seed(kube)
    rec = Recorder()
    attempts = 0

    def counting_client() -> Any:
        # Refused connections never reach the server's request log: count the source's tries at the client.
        client = kube.api_client()
        real = client.call_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal attempts
            attempts += 1
            return real(*args, **kwargs)

        client.call_api = counted
        return client

    source = KubeSource(counting_client, CONTROL_RESOURCES, timeout_seconds=5, missing_retry=0.5)
    async with running(source, rec):
        await until(lambda: rec.store.synced, "the initial list")
        kube.down()
        create(kube, SERVICES, service("db", "10.96.0.2"))  # a change the source cannot see until the end
        before = attempts
        await asyncio.sleep(3.0)  # the outage itself: what is measured is how often the source knocks meanwhile
        during = attempts - before
        kube.up()
        await until(lambda: _equal(kube, rec), "the store equal to the server after the outage", timeout=15)
        assert known_keys(source) == server_keys(kube)
    # Backoff from 0.2 s doubling (at least half of each cap waited): about 5 tries per resource in 3 s.
    assert 0 < during <= len(CONTROL_RESOURCES) * 8


async def test_a_kind_whose_crd_is_missing_is_not_fatal_and_is_picked_up_once_installed(kube: KubeApiServer) -> None:
    from tests.kubeapi import ResourceType

    istio = ResourceType.custom(ISTIO_AP.group, ISTIO_AP.version, ISTIO_AP.kind, ISTIO_AP.plural)
    kube.store.unregister(istio)
    _seed(kube)
    rec = Recorder()
    source = source_for(kube)
    async with running(source, rec):
        await until(lambda: rec.store.synced, "the initial list without the istio CRD")
        assert ISTIO_AP in source.missing
        kube.store.register(istio)
        create(kube, ISTIO_AP, _policy("from-istio", ISTIO_AP))
        key = ObjectKey("AuthorizationPolicy", "mesh", "from-istio")
        await until(lambda: key in rec.store.objects, "the istio policy once its CRD is served", timeout=10)
        assert ISTIO_AP not in source.missing


async def test_a_restarted_source_keeps_what_it_knew_and_reports_only_the_difference(kube: KubeApiServer) -> None:
    _seed(kube)
    create(kube, PODS, pod("b", "10.0.0.2"))
    rec = Recorder()
    source = source_for(kube)
    async with running(source, rec):
        await until(lambda: rec.store.synced, "the initial list")
    # While no source runs (the supervisor restarts a failed one): one pod goes, one Service comes.
    kube.store.delete(kube.store.types[("", "v1", "pods")], "mesh", "b")
    create(kube, SERVICES, service("db", "10.96.0.2"))
    calls = len(rec.calls)
    async with running(source, rec):
        await until(lambda: _equal(kube, rec), "the store equal to the server")
    [again] = rec.calls[calls:]
    assert sorted((b.origin, len(b.upserts), b.deletes) for b in again) == [
        ("kubernetes: Pod mesh/b", 0, (ObjectKey("Pod", "mesh", "b"),)),
        ("kubernetes: Service mesh/db", 1, ()),
    ]
