"""Upstream clusters (`ztunnel.l7.clusters`): state that outlives requests and config versions, and the endpoint
choice of each try. Configs are read from wire items as a proxy reads a version (`traffic_mesh`); time is a fake
monotonic clock passed in."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from meshlet_contracts.traffic import (
    ConnectionPool,
    ConsistentHash,
    LoadBalancer,
    OutlierDetection,
    RateLimit,
    TrafficPolicy,
)
from tests.unit.ztunnel.traffic_mesh import mesh, policy, service
from ztunnel.l7.clusters import Cluster, Clusters, Counts, Waiter
from ztunnel.l7.pool_limits import Admission
from ztunnel.state.mesh import Endpoint, MeshIndex

IPS = ("10.0.1.1", "10.0.1.2", "10.0.1.3")
EJECT_ON_FIRST_5XX = OutlierDetection(consecutive_5xx_errors=1, max_ejection_percent=100)
"""One 5xx ejects for 30 s, and every endpoint may be ejected."""


def web(*policies: TrafficPolicy, version: int = 1, ips: tuple[str, ...] = IPS) -> MeshIndex:
    return mesh([service("web", ips), service("api", ["10.0.2.1"])], policies=policies, version=version)


def endpoints_of(index: MeshIndex, cluster: Cluster) -> list[Endpoint]:
    return cluster.candidates(index.services[cluster.service])


def picks(cluster: Cluster, endpoints: list[Endpoint], now: float = 1.0, count: int = 30, **how: object) -> set[str]:
    """The endpoints `count` choices land on."""
    out = set()
    for _ in range(count):
        chosen = cluster.choose(endpoints, now, **how)  # type: ignore[arg-type]
        out.add("none" if chosen is None else chosen.ip)
    return out


def eject(cluster: Cluster, ip: str, now: float = 0.0) -> None:
    assert cluster.end(ip, 503, now, IPS), f"{ip} was not ejected"


@pytest.fixture
def futures() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop to make connection-slot waiters with (never run: the cluster only resolves them)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


# --- across config versions ---------------------------------------------------------------------------------------


def test_the_same_policy_in_a_new_version_keeps_the_cluster_and_its_state() -> None:
    spec: dict[str, Any] = {"outlier_detection": EJECT_ON_FIRST_5XX, "rate_limit": RateLimit(5, "minute", 5)}
    clusters = Clusters()
    first = clusters.get(web(policy("p", **spec), version=1), "shop/web", 80)
    parts = (first.balancer, first.outlier, first.rate)
    eject(first, IPS[0])
    second = clusters.get(web(policy("p", **spec), version=2), "shop/web", 80)  # an equal policy, a new object
    assert second is first
    assert (second.balancer, second.outlier, second.rate) == parts
    assert picks(second, endpoints_of(web(), second)) == set(IPS[1:])


def test_a_new_rate_limit_keeps_the_ejections_and_the_balancer() -> None:
    clusters = Clusters()
    before = policy("p", outlier_detection=EJECT_ON_FIRST_5XX, rate_limit=RateLimit(5, "minute", 5))
    cluster = clusters.get(web(before, version=1), "shop/web", 80)
    balancer, detector = cluster.balancer, cluster.outlier
    eject(cluster, IPS[0])
    after = policy("p", outlier_detection=EJECT_ON_FIRST_5XX, rate_limit=RateLimit(50, "minute", 50))
    index = web(after, version=2)
    assert clusters.get(index, "shop/web", 80) is cluster
    assert cluster.rate is not None and cluster.rate.rule.requests_per_unit == 50
    assert cluster.balancer is balancer and cluster.outlier is detector
    assert picks(cluster, endpoints_of(index, cluster)) == set(IPS[1:])


def test_new_outlier_settings_keep_the_ejections_and_apply_from_the_next_outcome() -> None:
    clusters = Clusters()
    cluster = clusters.get(web(policy("p", outlier_detection=EJECT_ON_FIRST_5XX), version=1), "shop/web", 80)
    eject(cluster, IPS[0])
    three = OutlierDetection(consecutive_5xx_errors=3, max_ejection_percent=100)
    index = web(policy("p", outlier_detection=three), version=2)
    assert clusters.get(index, "shop/web", 80) is cluster
    assert [cluster.end(IPS[1], 500, 1.0, IPS) for _ in range(3)] == [False, False, True]
    assert picks(cluster, endpoints_of(index, cluster)) == {IPS[2]}


def test_a_new_load_balancer_replaces_the_balancer_only() -> None:
    clusters = Clusters()
    cluster = clusters.get(web(policy("p", outlier_detection=EJECT_ON_FIRST_5XX), version=1), "shop/web", 80)
    assert not cluster.least_request
    eject(cluster, IPS[0])
    lb = LoadBalancer("LEAST_REQUEST")
    index = web(policy("p", outlier_detection=EJECT_ON_FIRST_5XX, load_balancer=lb), version=2)
    assert clusters.get(index, "shop/web", 80) is cluster
    assert cluster.least_request and cluster.balancer.policy == lb
    assert picks(cluster, endpoints_of(index, cluster)) == set(IPS[1:])


def test_a_removed_policy_removes_its_parts() -> None:
    clusters = Clusters()
    full = policy(
        "p",
        load_balancer=LoadBalancer("LEAST_REQUEST"),
        outlier_detection=EJECT_ON_FIRST_5XX,
        connection_pool=ConnectionPool(max_connections=1),
        rate_limit=RateLimit(1, "minute", 1),
    )
    cluster = clusters.get(web(full, version=1), "shop/web", 80)
    assert cluster.outlier is not None and cluster.limits is not None and cluster.rate is not None
    eject(cluster, IPS[0])
    index = web(version=2)
    assert clusters.get(index, "shop/web", 80) is cluster
    assert (cluster.policy, cluster.outlier, cluster.limits, cluster.rate) == (None, None, None, None)
    assert not cluster.least_request
    assert picks(cluster, endpoints_of(index, cluster)) == set(IPS)  # nothing ejected any more


def test_a_policy_for_one_port_configures_that_ports_cluster_only() -> None:
    index = mesh([service("web", IPS, ports=(80, 81))], policies=[policy("p", port=81, rate_limit=RateLimit(1))])
    clusters = Clusters()
    assert clusters.get(index, "shop/web", 80).rate is None
    assert clusters.get(index, "shop/web", 81).rate is not None
    assert clusters.get(index, "shop/web", 80) is not clusters.get(index, "shop/web", 81)


def test_a_removed_services_cluster_is_pruned_when_the_next_version_is_installed() -> None:
    clusters = Clusters()
    both = web(policy("p", target="api", outlier_detection=EJECT_ON_FIRST_5XX), version=1)
    web_cluster = clusters.get(both, "shop/web", 80)
    api_cluster = clusters.get(both, "shop/api", 80)
    assert api_cluster.end("10.0.2.1", 503, 0.0) is True
    only_web = mesh([service("web", IPS)], version=2)
    clusters.installed(only_web)
    assert clusters.get(only_web, "shop/web", 80) is web_cluster
    assert clusters.all() == [web_cluster]
    back = web(policy("p", target="api", outlier_detection=EJECT_ON_FIRST_5XX), version=3)
    clusters.installed(back)
    again = clusters.get(back, "shop/api", 80)
    assert again is not api_cluster
    assert picks(again, endpoints_of(back, again)) == {"10.0.2.1"}  # a new cluster: no ejection carried over


def test_a_cluster_with_connections_open_outlives_its_service_until_they_close(
    futures: asyncio.AbstractEventLoop,
) -> None:
    clusters = Clusters()
    index = web(policy("p", target="api", connection_pool=ConnectionPool(max_connections=4)), version=1)
    api = clusters.get(index, "shop/api", 80)
    assert api.limits is not None and api.limits.request_connection(futures.create_future()) is Admission.CONNECT
    clusters.installed(mesh([service("web", IPS)], version=2))
    assert api in clusters.all()  # its open connection still counts against the limit
    assert api.limits.connection_closed() is None
    clusters.installed(mesh([service("web", IPS)], version=3))
    assert api not in clusters.all()


def test_an_endpoint_that_left_the_service_comes_back_without_its_old_ejection() -> None:
    clusters = Clusters()
    detect = policy("p", outlier_detection=EJECT_ON_FIRST_5XX)
    cluster = clusters.get(web(detect, version=1), "shop/web", 80)
    eject(cluster, IPS[0], now=0.0)
    clusters.installed(web(detect, version=2, ips=IPS[1:]))
    index = web(detect, version=3)
    clusters.installed(index)
    assert clusters.get(index, "shop/web", 80) is cluster
    assert IPS[0] in picks(cluster, endpoints_of(index, cluster), now=1.0)  # within the 30 s it would have lasted


def test_a_raised_connection_limit_admits_waiters_and_a_removed_one_admits_them_all(
    futures: asyncio.AbstractEventLoop,
) -> None:
    clusters = Clusters()
    cluster = clusters.get(web(policy("p", connection_pool=ConnectionPool(1)), version=1), "shop/web", 80)
    assert cluster.limits is not None
    waiters: list[Waiter] = [futures.create_future() for _ in range(4)]
    admissions = [cluster.limits.request_connection(w) for w in waiters]
    assert admissions == [Admission.CONNECT] + [Admission.QUEUED] * 3
    clusters.get(web(policy("p", connection_pool=ConnectionPool(2)), version=2), "shop/web", 80)
    assert [w.done() for w in waiters[1:]] == [True, False, False]
    clusters.get(web(version=3), "shop/web", 80)
    assert cluster.limits is None
    assert all(w.done() for w in waiters[1:])


# --- the endpoint of each try -------------------------------------------------------------------------------------


def test_candidates_are_the_ready_endpoints_serving_the_port() -> None:
    item = service("web", IPS, ports=(80, 81))
    item["endpoints"][1]["ready"] = False
    item["endpoints"][2]["ports"] = {"81": 8080}
    index = mesh([item])
    cluster = Clusters().get(index, "shop/web", 80)
    assert [e.ip for e in endpoints_of(index, cluster)] == [IPS[0]]


@pytest.mark.parametrize(
    ("ejected", "tried", "expected"),
    [
        ((), (), set(IPS)),
        ((IPS[0],), (), set(IPS[1:])),
        ((), (IPS[0],), set(IPS[1:])),  # a retry goes to an endpoint not tried yet
        ((), IPS[:2], {IPS[2]}),
        ((), IPS, set(IPS)),  # every one tried: any of them again
        ((IPS[0],), (IPS[1],), {IPS[2]}),
        ((IPS[0], IPS[1]), (IPS[2],), {IPS[2]}),  # the only one left, tried or not
        (IPS, (), {"none"}),  # every endpoint ejected: nowhere to go
    ],
)
def test_choose_skips_ejected_endpoints_and_prefers_untried_ones(
    ejected: tuple[str, ...], tried: tuple[str, ...], expected: set[str]
) -> None:
    index = web(policy("p", outlier_detection=EJECT_ON_FIRST_5XX))
    cluster = Clusters().get(index, "shop/web", 80)
    for ip in ejected:
        eject(cluster, ip)
    assert picks(cluster, endpoints_of(index, cluster), tried=tried) == expected


def test_an_ejection_ends_on_time() -> None:
    index = web(policy("p", outlier_detection=EJECT_ON_FIRST_5XX))
    cluster = Clusters().get(index, "shop/web", 80)
    for ip in IPS:
        eject(cluster, ip, now=0.0)
    assert cluster.choose(endpoints_of(index, cluster), 29.9) is None
    assert picks(cluster, endpoints_of(index, cluster), now=30.0) == set(IPS)


def test_under_consistent_hash_a_key_keeps_its_endpoint_and_a_retry_goes_elsewhere() -> None:
    index = web(policy("p", load_balancer=LoadBalancer(consistent_hash=ConsistentHash(http_header_name="x-user"))))
    cluster = Clusters().get(index, "shop/web", 80)
    endpoints = endpoints_of(index, cluster)
    [home] = picks(cluster, endpoints, hash_key="alice")
    others = set(IPS) - {home}
    assert picks(cluster, endpoints, hash_key="alice", tried=[home]) <= others
    assert picks(cluster, endpoints, hash_key="alice", tried=sorted(others)[:1]) == {home}


def test_least_request_counts_requests_in_flight_and_picks_the_less_busy() -> None:
    index = web(policy("p", load_balancer=LoadBalancer("LEAST_REQUEST")), ips=IPS[:2])
    cluster = Clusters().get(index, "shop/web", 80)
    counter = cluster.balancer.least_request
    cluster.begin(IPS[0])
    cluster.begin(IPS[0])
    assert (counter.active(IPS[0]), counter.active(IPS[1])) == (2, 0)
    endpoints = endpoints_of(index, cluster)
    assert picks(cluster, endpoints) == {IPS[1]}  # of two, both are drawn: the idle one wins
    cluster.begin(IPS[1])
    cluster.begin(IPS[1])
    cluster.begin(IPS[1])
    assert picks(cluster, endpoints) == {IPS[0]}
    for _ in range(2):
        cluster.end(IPS[0], 200, 0.0)
    assert counter.active(IPS[0]) == 0


def test_other_balancers_do_not_count_requests_in_flight() -> None:
    cluster = Clusters().get(web(), "shop/web", 80)
    cluster.begin(IPS[0])
    assert cluster.balancer.least_request.active(IPS[0]) == 0
    cluster.end(IPS[0], 200, 0.0)  # and an end without a begin is harmless
    assert cluster.balancer.least_request.active(IPS[0]) == 0


def test_round_robin_without_a_policy_takes_each_in_turn() -> None:
    index = web()
    cluster = Clusters().get(index, "shop/web", 80)
    endpoints = endpoints_of(index, cluster)
    order = [cluster.choose(endpoints, 0.0).ip for _ in range(6)]  # type: ignore[union-attr]
    assert sorted(order[:3]) == sorted(IPS) and order[3:] == order[:3]


# --- counts -------------------------------------------------------------------------------------------------------


def test_ejections_are_counted_in_the_shared_counts() -> None:
    counts: Counts = defaultdict(int)
    clusters = Clusters(counts)
    detection = OutlierDetection(consecutive_5xx_errors=2, max_ejection_percent=100)
    cluster = clusters.get(web(policy("p", outlier_detection=detection)), "shop/web", 80)
    assert clusters.counts is counts
    outcomes = [cluster.end(IPS[0], status, 0.0, IPS) for status in (500, 200, 500, 0, 503)]
    assert outcomes == [False, False, False, False, True]  # a success resets the run; an abandoned try is no outcome
    assert cluster.end(IPS[0], 503, 1.0, IPS) is False  # already ejected
    assert cluster.end(IPS[1], None, 1.0, IPS) is False and cluster.end(IPS[1], None, 1.0, IPS) is True
    assert dict(counts) == {("ejections", "shop", "web", ""): 2}


def test_without_outlier_detection_failures_eject_nothing() -> None:
    counts: Counts = defaultdict(int)
    index = web()
    cluster = Clusters(counts).get(index, "shop/web", 80)
    assert not any(cluster.end(IPS[0], 503, 0.0, IPS) for _ in range(20))
    assert picks(cluster, endpoints_of(index, cluster)) == set(IPS)
    assert not counts


def test_a_judged_connect_counts_for_ejection_while_the_connection_stays_in_flight() -> None:
    detection = OutlierDetection(consecutive_5xx_errors=2, max_ejection_percent=100)
    lb = LoadBalancer("LEAST_REQUEST")
    clusters = Clusters()
    cluster = clusters.get(web(policy("p", load_balancer=lb, outlier_detection=detection)), "shop/web", 80)
    cluster.begin(IPS[0])
    assert [cluster.judge(IPS[0], None, 0.0, IPS) for _ in range(2)] == [False, True]
    assert cluster.balancer.least_request.active(IPS[0]) == 1  # still open: only `end` closes the count
    assert clusters.counts[("ejections", "shop", "web", "")] == 1


def test_an_older_index_never_reconfigures_a_cluster() -> None:
    clusters = Clusters()
    old = web(policy("p", outlier_detection=EJECT_ON_FIRST_5XX), version=1)
    new = web(version=2)
    clusters.installed(new)
    cluster = clusters.get(new, "shop/web", 80)
    assert clusters.get(old, "shop/web", 80) is cluster and cluster.outlier is None
