"""Circuit breaking counters: connections up to maxConnections, then a bounded pending queue served in order, then
overflow (UO); connection reuse up to maxRequestsPerConnection; concurrent retries up to maxRetries."""

from __future__ import annotations

from meshlet_contracts.traffic import ConnectionPool
from ztunnel.l7.pool_limits import Admission, ClusterLimits


def limits(**pool: int | None) -> ClusterLimits[str]:
    return ClusterLimits(ConnectionPool(**pool))


def test_max_connections_one_and_one_pending_under_sixteen_concurrent_requests() -> None:
    cluster = limits(max_connections=1, http1_max_pending_requests=1)
    outcomes = [cluster.request_connection(f"r{i}") for i in range(16)]
    assert outcomes[:2] == [Admission.CONNECT, Admission.QUEUED]
    assert outcomes[2:] == [Admission.OVERFLOW] * 14
    assert cluster.overflows == {"pending": 14}
    assert (cluster.connections, cluster.pending) == (1, 1)


def test_a_freed_slot_goes_to_the_first_waiter_and_then_is_released() -> None:
    cluster = limits(max_connections=1, http1_max_pending_requests=5)
    cluster.request_connection("r0")
    for name in ("r1", "r2"):
        assert cluster.request_connection(name) is Admission.QUEUED
    assert cluster.connection_closed() == "r1"
    assert cluster.connections == 1  # the slot passed on
    assert cluster.connection_closed() == "r2"
    assert cluster.connection_closed() is None
    assert cluster.connections == 0


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    cluster = limits(max_connections=1)
    cluster.request_connection("r0")
    cluster.request_connection("r1")
    cluster.request_connection("r2")
    assert cluster.cancel("r1")
    assert not cluster.cancel("r1")
    assert cluster.connection_closed() == "r2"


def test_no_pending_allowed_overflows_at_once() -> None:
    cluster = limits(max_connections=2, http1_max_pending_requests=0)
    assert [cluster.request_connection(str(i)) for i in range(3)] == [Admission.CONNECT] * 2 + [Admission.OVERFLOW]
    assert cluster.overflows == {"connections": 1}


def test_without_a_policy_nothing_is_limited() -> None:
    cluster: ClusterLimits[int] = ClusterLimits(None)
    assert all(cluster.request_connection(i) is Admission.CONNECT for i in range(1000))
    assert cluster.reusable(10_000)
    assert all(cluster.begin_retry() for _ in range(1000))


def test_max_requests_per_connection() -> None:
    cluster = limits(max_requests_per_connection=2)
    assert cluster.reusable(1)
    assert not cluster.reusable(2)


def test_max_retries_bounds_retries_in_flight() -> None:
    cluster = limits(max_retries=2)
    assert [cluster.begin_retry() for _ in range(3)] == [True, True, False]
    cluster.end_retry()
    assert cluster.begin_retry()
    assert cluster.overflows == {"retries": 1}


def test_raising_max_connections_admits_waiters_in_order() -> None:
    cluster = limits(max_connections=1)
    for name in ("r0", "r1", "r2", "r3"):
        cluster.request_connection(name)
    assert cluster.update(ConnectionPool(max_connections=3)) == ["r1", "r2"]
    assert (cluster.connections, cluster.pending) == (3, 1)
    assert cluster.update(ConnectionPool(max_connections=1)) == []  # lowering closes nothing
    assert cluster.connections == 3
    assert cluster.connection_closed() is None  # over the new limit: the slot goes, r3 waits on
    assert cluster.connection_closed() is None
    assert cluster.connection_closed() == "r3"
