"""A TCP connection to a Service port under a TrafficPolicy: the policy's per-connection parts, at L4.

`Outbound.serve` comes here only for a Service VIP whose port has a TrafficPolicy (`MeshIndex.traffic_policy`);
every other connection is routed by `route.route` as before (the index's round robin). Per connection, on the
Service port's cluster (`ztunnel.l7.clusters`, the same one the HTTP path uses):
- the endpoint is the cluster's choice among the ready ones not ejected: LEAST_REQUEST counts the connections
  open to each endpoint (Envoy's least-connection for TCP), a consistent hash with `useSourceIp` keeps a client
  IP on one endpoint, and a hash on an HTTP header or cookie, which has no meaning here, picks at random (as
  Envoy's TCP proxy does when it has no hash key);
- `tcp.maxConnections` caps the connections open through this proxy: one over it is refused at once (a TCP
  client cannot be held in a pending queue) and the caller resets it, flagged UO;
- outlier detection judges the connect: a failure counts as Envoy counts a connect failure (a gateway error, a
  5xx), a success as a 200; consecutive failures eject the endpoint, and the next connections skip it.
What a connection holds (its slot, its count in the least-request balancer) is given back once, when its tunnel
finishes (`Tunnel.on_finish`: nothing is added to the relay's per-byte path).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ztunnel.l7.clusters import Cluster, Clusters, Waiter
from ztunnel.l7.pool_limits import ClusterLimits
from ztunnel.proxy.context import ServedPod
from ztunnel.proxy.relay import Tunnel
from ztunnel.proxy.route import Refuse, Route, classify
from ztunnel.state.mesh import MeshIndex, Service, Upstream

log = logging.getLogger(__name__)
ABANDONED = 0
"""`Cluster.end`'s status for an end that is no outcome: the connection's outcome was its connect."""


class ClusterConnection:
    """One TCP connection's share of its Service port's cluster."""

    __slots__ = ("cluster", "service", "endpoint", "_limits", "_counted")

    def __init__(self, cluster: Cluster, service: Service) -> None:
        self.cluster = cluster
        self.service = service
        self.endpoint = ""
        """The chosen endpoint's IP (as the cluster names endpoints); set by `pick`."""
        self._limits: ClusterLimits[Waiter] | None = None
        """The limits that granted this connection's slot: the slot goes back there even if a new policy
        version replaced the cluster's limits meanwhile."""
        self._counted = False

    def pick(self, index: MeshIndex, served: Mapping[str, ServedPod], port: int, source_ip: str) -> Route:
        """The endpoint for this connection and how to reach it, or Refuse when none may take it."""
        cluster = self.cluster
        endpoints = cluster.candidates(self.service)
        if not endpoints:
            return Refuse("no_healthy_endpoint", f"service {cluster.service} has no ready endpoint for port {port}")
        policy = cluster.policy
        lb = policy.load_balancer if policy is not None else None
        hashed = lb.consistent_hash if lb is not None else None
        # Only the source IP is a hash key at L4; without one the balancer picks at random.
        key = source_ip if hashed is not None and hashed.use_source_ip else None
        chosen = cluster.choose(endpoints, time.monotonic(), key)
        if chosen is None:
            return Refuse("no_healthy_endpoint", f"every endpoint of service {cluster.service} port {port} is ejected")
        self.endpoint = chosen.ip
        up = Upstream(chosen.ip, chosen.ports[port], index.workloads.get(chosen.workload_uid), self.service)
        return classify(served, up)

    def admit(self, tunnel: Tunnel) -> bool:
        """Take a connection slot (`tcp.maxConnections`) and count the connection to its endpoint, both given
        back when `tunnel` finishes. False: over the limit (counted as an overflow); nothing was taken."""
        cluster = self.cluster
        limits = cluster.limits
        if limits is not None:
            if not limits.try_connection():
                cluster.count("overflows", "connections")
                return False
            self._limits = limits
        cluster.begin(self.endpoint)
        self._counted = True
        if tunnel.finished:  # the client left already: no finish will come to give them back
            self.release()
            return True
        previous = tunnel.on_finish
        if previous is None:
            tunnel.on_finish = self._finished
        else:

            def both(finished: Tunnel) -> None:
                previous(finished)
                self._finished(finished)

            tunnel.on_finish = both
        return True

    def connected(self) -> None:
        """The endpoint accepted the connection: a success for outlier detection."""
        self.cluster.judge(self.endpoint, 200, time.monotonic(), self._endpoint_ips())

    def connect_failed(self) -> None:
        """The endpoint could not be reached (refused, unreachable, timed out, a failed handshake)."""
        cluster = self.cluster
        if cluster.judge(self.endpoint, None, time.monotonic(), self._endpoint_ips()):
            log.info("outlier detection ejected %s from %s:%d", self.endpoint, cluster.service, cluster.port)

    def release(self) -> None:
        """Give back what `admit` took (once): the least-request count, and the slot, to the first HTTP request
        waiting for one (`ClusterLimits.connection_closed`) or freed."""
        if self._counted:
            self._counted = False
            self.cluster.end(self.endpoint, ABANDONED, time.monotonic())
        limits, self._limits = self._limits, None
        if limits is not None:
            waiter = limits.connection_closed()
            # A waiter cancelled meanwhile finds, in its own handler, that it was handed the slot and passes it on.
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _finished(self, tunnel: Tunnel) -> None:
        self.release()

    def _endpoint_ips(self) -> list[str]:
        return [e.ip for e in self.service.endpoints]


def under_policy(clusters: Clusters, index: MeshIndex, service: Service, port: int) -> ClusterConnection | None:
    """The cluster share of a connection to `port` of `service`, or None when no TrafficPolicy covers it (then
    the connection is routed as any other)."""
    name = f"{service.namespace}/{service.name}"
    if index.traffic_policy(name, port) is None:
        return None
    return ClusterConnection(clusters.get(index, name, port), service)
