"""Upstream clusters: what this node proxy keeps per Service port it sends to, as Envoy keeps per cluster.

A cluster is a backend Service and port (`shop/web`, 80). Its state lives across requests and connections and
across config versions: the load balancer (round-robin position, requests in flight, hash tables), the
outlier detector (consecutive failures, ejections), the connection-pool counters and the rate limiter's
buckets. The TrafficPolicy in force for the cluster (`MeshIndex.traffic_policy`) configures them; when it
changes, each part is rebuilt only if its own section changed, so a new rate limit does not reset the
ejections. Clusters of Services that left the config are dropped when the next config version is first used.

`Cluster.choose` is the per-request (or per-connection) endpoint choice: ready endpoints that have the port,
minus ejected ones, minus those already tried for this request (when others remain), then the balancer.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Collection

from meshlet_contracts.traffic import TrafficPolicy
from ztunnel.l7.balance import Balancer
from ztunnel.l7.outlier import OutlierDetector
from ztunnel.l7.pool_limits import ClusterLimits
from ztunnel.l7.ratelimit import RateLimiter
from ztunnel.state.mesh import Endpoint, MeshIndex, Service

Counts = defaultdict[tuple[str, str, str, str], int]
"""(event, service namespace, service name, kind) -> count: `ztunnel.metrics.Metrics.traffic`."""
Waiter = asyncio.Future[None]
"""A request waiting for a connection slot of a cluster at its limit; resolved when the slot is its own."""


class Cluster:
    """One backend Service port: endpoints, and the TrafficPolicy's balancer, detector, limits, rate limiter."""

    def __init__(self, service: str, port: int, policy: TrafficPolicy | None, counts: Counts | None = None) -> None:
        self.service = service
        """`namespace/name`."""
        self.port = port
        namespace, _, name = service.partition("/")
        self._labels = (namespace, name)
        self._counts: Counts = counts if counts is not None else defaultdict(int)
        self.policy: TrafficPolicy | None = None
        self.balancer = Balancer(None)
        self.outlier: OutlierDetector | None = None
        self.limits: ClusterLimits[Waiter] | None = None
        self.rate: RateLimiter | None = None
        self.least_request = False
        self._rng = random.Random()
        self.configure(policy)

    def count(self, event: str, kind: str = "") -> None:
        """One traffic-management event of this cluster (`ztunnel.metrics.TRAFFIC_EVENTS`)."""
        self._counts[(event, *self._labels, kind)] += 1

    def configure(self, policy: TrafficPolicy | None) -> None:
        """Apply a (new) policy: each part is replaced only when its own section changed."""
        old = self.policy
        self.policy = policy
        lb = policy.load_balancer if policy is not None else None
        if old is None or old.load_balancer != lb:
            self.balancer = Balancer(lb)
            self.least_request = lb is not None and lb.simple == "LEAST_REQUEST"
        detection = policy.outlier_detection if policy is not None else None
        if detection is None:
            self.outlier = None
        elif self.outlier is None:
            self.outlier = OutlierDetector(detection)
        else:
            self.outlier.settings = detection  # ejections in progress stay
        pool = policy.connection_pool if policy is not None else None
        if pool is None:
            if self.limits is not None:
                for waiter in self.limits.update(None):
                    _grant(waiter)
            self.limits = None
        elif self.limits is None:
            self.limits = ClusterLimits(pool)
        elif self.limits.pool != pool:
            for waiter in self.limits.update(pool):
                _grant(waiter)
        rule = policy.rate_limit if policy is not None else None
        if rule is None:
            self.rate = None
        elif self.rate is None or self.rate.rule != rule:
            self.rate = RateLimiter(rule)

    def candidates(self, service: Service) -> list[Endpoint]:
        """The endpoints that may take a request to this port: ready, and serving it."""
        port = self.port
        return [e for e in service.endpoints if e.ready and port in e.ports]

    def choose(
        self, endpoints: list[Endpoint], now: float, hash_key: str | bytes | None = None, tried: Collection[str] = ()
    ) -> Endpoint | None:
        """The endpoint for the next request (or connection): None when every one is ejected."""
        if self.outlier is not None:
            endpoints = [e for e in endpoints if not self.outlier.is_ejected(e.ip, now)]
        if not endpoints:
            return None
        if len(endpoints) == 1:
            return endpoints[0]
        by_name = {e.ip: e for e in endpoints}
        untried = [name for name in by_name if name not in tried] if tried else []
        if untried and self.balancer.hashing:
            # A hash table is built per endpoint set: pick on the whole set, and only a retry that lands on an
            # endpoint already tried goes elsewhere (at random), rather than a table for every subset.
            picked = self.balancer.pick(list(by_name), hash_key)
            return by_name[picked if picked not in tried else self._rng.choice(untried)]
        return by_name[self.balancer.pick(untried or list(by_name), hash_key)]

    def begin(self, endpoint: str) -> None:
        """A request (or connection) to `endpoint` starts: counted for LEAST_REQUEST."""
        if self.least_request:
            self.balancer.least_request.begin(endpoint)

    def end(self, endpoint: str, status: int | None, now: float, endpoints: Collection[str] = ()) -> bool:
        """It ended with `status` (None: no answer; 0: abandoned, not the endpoint's doing): counted, and told to
        the outlier detector. Returns whether this outcome ejected the endpoint."""
        if self.least_request:
            self.balancer.least_request.end(endpoint)
        if self.outlier is None or status == 0:
            return False
        ejected = self.outlier.record(endpoint, status, now, tuple(endpoints))
        if ejected:
            self.count("ejections")
        return ejected

    def judge(self, endpoint: str, status: int | None, now: float, endpoints: Collection[str] = ()) -> bool:
        """An outcome told to the outlier detector only, the request (or connection) still in flight: a TCP
        connection's connect (None: failed) is its outcome, and it stays open. Returns whether it ejected."""
        if self.outlier is None:
            return False
        ejected = self.outlier.record(endpoint, status, now, tuple(endpoints))
        if ejected:
            self.count("ejections")
        return ejected


class Clusters:
    """Every cluster this proxy has sent to, by (Service `namespace/name`, port)."""

    def __init__(self, counts: Counts | None = None) -> None:
        self._clusters: dict[tuple[str, int], Cluster] = {}
        self._version = -1
        self.counts: Counts = counts if counts is not None else defaultdict(int)
        """Where every cluster counts its events: `Metrics.traffic`."""

    def get(self, index: MeshIndex, service: str, port: int) -> Cluster:
        """The cluster of `port` of `service`, configured by `index`'s policy for it. An index older than the
        one installed last (a connection that kept the index it opened with) never reconfigures a cluster."""
        policy = index.traffic_policy(service, port)
        cluster = self._clusters.get((service, port))
        if cluster is None:
            cluster = self._clusters[(service, port)] = Cluster(service, port, policy, self.counts)
        elif cluster.policy is not policy and cluster.policy != policy and index.version >= self._version:
            cluster.configure(policy)
        return cluster

    def all(self) -> list[Cluster]:
        return list(self._clusters.values())

    def installed(self, index: MeshIndex) -> None:
        """A new config version is in force (`ctx.index`): forget clusters whose Service left, and the outlier
        state of endpoints that left a Service. Versions may restart lower (a new control epoch): the newest is
        whatever was installed last."""
        self._version = index.version
        for key, cluster in list(self._clusters.items()):
            service = index.services.get(key[0])
            busy = cluster.limits is not None and (cluster.limits.connections or cluster.limits.pending)
            if service is None and not busy:
                del self._clusters[key]
            elif service is not None and cluster.outlier is not None:
                cluster.outlier.forget(e.ip for e in service.endpoints)


def _grant(waiter: Waiter) -> None:
    if not waiter.done():
        waiter.set_result(None)
