"""A TCP connection's share of its Service port's cluster (`ztunnel.proxy.tcp_cluster`), with no sockets: which
connections take the policy path, the endpoint choice, the slot of `tcp.maxConnections` and what a finished
tunnel gives back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from control.model.kube import Namespace, Pod, Service, ServicePort
from control.model.mesh import MeshSettings, service_item, workload_item
from control.model.traffic import TrafficPolicy
from meshlet_contracts.traffic import ConnectionPool
from ztunnel.config.state import ConfigState, apply
from ztunnel.l7.clusters import Clusters
from ztunnel.l7.pool_limits import Admission, ClusterLimits
from ztunnel.metrics import Metrics
from ztunnel.proxy.relay import Tunnel
from ztunnel.proxy.route import Passthrough, Refuse
from ztunnel.proxy.tcp_cluster import ClusterConnection, under_policy
from ztunnel.state.mesh import MeshIndex

VIP, PORT = "10.96.0.20", 5432
IPS = ("10.0.3.1", "10.0.3.2", "10.0.3.3")


def pod(name: str, ip: str, ready: bool = True) -> Pod:
    return Pod(f"uid-{name}", name, "legacy", "node1", "db", (ip,), (("app", "db"),), False, "Running", ready, ())


def index(ready: bool = True, **spec: Any) -> MeshIndex:
    pods = [pod(f"db-{i}", ip, ready) for i, ip in enumerate(IPS)]
    service = Service("db", "legacy", (VIP,), (ServicePort("tcp", PORT, 5000, "TCP"),), (("app", "db"),))
    resources: dict[str, list[Any]] = {
        "workloads": [workload_item(p, Namespace("legacy", ()), MeshSettings()) for p in pods],
        "services": [service_item(service, pods, MeshSettings())],
    }
    if spec:
        obj = {"apiVersion": "networking.meshlet.io/v1", "kind": "TrafficPolicy"}
        wire = TrafficPolicy.from_k8s(
            {**obj, "metadata": {"name": "db", "namespace": "legacy"}, "spec": {"targetRef": {"name": "db"}, **spec}}
        ).to_wire()
        resources["traffic_policies"] = [wire]
    message = {"type": "snapshot", "epoch": "e", "version": 1, "resources": resources}
    return MeshIndex.from_config(apply(ConfigState(), message))


def share(idx: MeshIndex, clusters: Clusters | None = None) -> ClusterConnection:
    held = under_policy(clusters or Clusters(), idx, idx.by_vip[VIP], PORT)
    assert held is not None
    return held


def tunnel() -> Tunnel:
    return Tunnel("outbound", Metrics(), set(), "test")


def test_a_service_without_a_policy_takes_the_plain_path_and_creates_no_cluster() -> None:
    clusters = Clusters()
    assert under_policy(clusters, index(), index().by_vip[VIP], PORT) is None
    assert clusters.all() == []


def test_a_policy_for_the_service_gives_a_share_of_its_cluster() -> None:
    clusters = Clusters()
    held = share(index(loadBalancer={"simple": "RANDOM"}), clusters)
    assert held.cluster is clusters.all()[0] and (held.cluster.service, held.cluster.port) == ("legacy/db", PORT)


def test_the_source_ip_keys_a_consistent_hash() -> None:
    idx = index(loadBalancer={"consistentHash": {"useSourceIp": True}})
    held = share(idx)
    picks = {held.pick(idx, {}, PORT, "10.0.1.7").upstream.ip for _ in range(20)}  # type: ignore[union-attr]
    assert len(picks) == 1


def test_an_http_hash_key_means_nothing_at_l4_and_the_pick_is_random() -> None:
    idx = index(loadBalancer={"consistentHash": {"httpHeaderName": "x-user"}})
    held = share(idx)
    picks = {held.pick(idx, {}, PORT, "10.0.1.7").upstream.ip for _ in range(200)}  # type: ignore[union-attr]
    assert picks == set(IPS)


def test_the_pick_reaches_the_endpoint_on_its_target_port() -> None:
    idx = index(loadBalancer={"simple": "ROUND_ROBIN"})
    decision = share(idx).pick(idx, {}, PORT, "10.0.1.7")
    assert isinstance(decision, Passthrough) and decision.upstream.port == 5000
    assert decision.upstream.service is idx.by_vip[VIP]


def test_no_ready_endpoint_or_every_one_ejected_is_refused() -> None:
    idx = index(ready=False, loadBalancer={"simple": "RANDOM"})
    refused = share(idx).pick(idx, {}, PORT, "10.0.1.7")
    assert isinstance(refused, Refuse) and refused.reason == "no_healthy_endpoint"
    idx = index(outlierDetection={"consecutiveGatewayErrors": 1, "maxEjectionPercent": 100})
    clusters = Clusters()
    for ip in IPS:
        held = share(idx, clusters)
        held.endpoint = ip
        held.connect_failed()
    refused = share(idx, clusters).pick(idx, {}, PORT, "10.0.1.7")
    assert isinstance(refused, Refuse) and "ejected" in refused.detail


def test_a_successful_connect_resets_the_failures_counted_towards_ejection() -> None:
    idx = index(outlierDetection={"consecutiveGatewayErrors": 2})
    held = share(idx)
    held.endpoint = IPS[0]
    for _ in range(3):
        held.connect_failed()
        held.connected()
    assert held.pick(idx, {}, PORT, "x").upstream.ip in IPS  # type: ignore[union-attr]
    assert held.cluster.outlier is not None and held.cluster.outlier.ejections_total == 0


def test_least_request_counts_a_connection_until_its_tunnel_finishes() -> None:
    idx = index(loadBalancer={"simple": "LEAST_REQUEST"})
    held = share(idx)
    held.endpoint = IPS[1]
    t = tunnel()
    assert held.admit(t)
    counter = held.cluster.balancer.least_request
    assert counter.active(IPS[1]) == 1
    t._maybe_finish()  # both sides gone
    assert counter.active(IPS[1]) == 0
    held.release()  # once only
    assert counter.active(IPS[1]) == 0


def test_max_connections_refuses_at_once_and_a_finished_tunnel_frees_its_slot() -> None:
    idx = index(connectionPool={"tcp": {"maxConnections": 1}})
    clusters = Clusters()
    first, second = share(idx, clusters), share(idx, clusters)
    t = tunnel()
    assert first.admit(t)
    assert not second.admit(tunnel())
    limits = first.cluster.limits
    assert limits is not None and limits.connections == 1 and limits.pending == 0
    assert clusters.counts[("overflows", "legacy", "db", "connections")] == 1
    t._maybe_finish()
    assert limits.connections == 0
    assert second.admit(tunnel())


def test_admitted_to_a_tunnel_already_finished_takes_nothing_for_long() -> None:
    idx = index(connectionPool={"tcp": {"maxConnections": 1}})
    held = share(idx)
    t = tunnel()
    t._maybe_finish()
    assert held.admit(t)
    assert held.cluster.limits is not None and held.cluster.limits.connections == 0


@pytest.mark.asyncio
async def test_a_freed_slot_goes_to_an_http_request_waiting_for_one() -> None:
    idx = index(connectionPool={"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}})
    held = share(idx)
    t = tunnel()
    assert held.admit(t)
    limits = held.cluster.limits
    assert limits is not None
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert limits.request_connection(waiter) is Admission.QUEUED
    t._maybe_finish()
    assert waiter.done() and limits.connections == 1, "the slot passed on to the waiter"


def test_try_connection_never_queues() -> None:
    limits: ClusterLimits[object] = ClusterLimits(ConnectionPool(max_connections=1))
    assert limits.try_connection()
    assert not limits.try_connection()
    assert limits.pending == 0 and limits.overflows["connections"] == 1
    assert limits.connection_closed() is None
    assert limits.try_connection()
    assert ClusterLimits(None).try_connection()
