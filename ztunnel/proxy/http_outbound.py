"""Outbound HTTP: a pod's connection to an HTTP Service port, proxied request by request (source side).

`outbound.py` hands a captured connection here when its destination is a Service port that is HTTP (see
`meshlet_contracts.protocols`). Per request, on the current config:
1. `admit`: the plan (`ztunnel.l7.plan`): the HTTPRoute rule and its filters, the backend cluster, rate limits,
   timeouts and retries; answered here when the plan says so (404 NR, 500, 429 RL, a redirect); mirrored
   copies are sent off (`http_mirror.py`);
2. `connect`, once per try: an endpoint of the backend chosen by the cluster's balancer among the ready, not
   ejected ones, not tried yet for this request when others remain; a connection slot when the cluster has
   `connectionPool` limits (wait in the pending queue, or 503 UO); then an upstream connection reached by the
   same route kinds as L4 (`route.py`):
   - `Hbone`: a CONNECT stream to the endpoint's node (mTLS, the source pod's certificate), carrying HTTP/1.1
     keep-alive; kept for the next request to that endpoint from this pod (`UpstreamPool`), so a request costs
     no CONNECT round trip once warm;
   - `Local`: an endpoint this process serves: its policies are decided here, per request, then its app is
     reached directly (both reporters counted here, as on the L4 path);
   - `Passthrough`: an endpoint outside the mesh, in plaintext from the pod's netns;
3. `attempted`: each try's outcome goes to the cluster (requests in flight, outlier detection); `retry` grants
   another try within the cluster's `maxRetries`; `release` frees the slot and keeps the connection.
A destination that answers the CONNECT 401/403 denied the connection: the app gets 403 `RBAC: access denied`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time

from ztunnel.identity.manager import IdentityError
from ztunnel.l7.authz import authorize_request
from ztunnel.l7.channel import Channel
from ztunnel.l7.clusters import Cluster, Waiter
from ztunnel.l7.exchange import CONNECT_FAILURE, OVERFLOW, Exchange, Reply, Upstream, UpstreamFailed
from ztunnel.l7.plan import Plan, plan
from ztunnel.l7.pool_limits import Admission, ClusterLimits
from ztunnel.metrics import Labels, Metrics, Peer, tcp_labels
from ztunnel.proxy.connect import StreamRefused, open_stream
from ztunnel.proxy.context import ProxyContext, ServedPod, peer_of
from ztunnel.proxy.delivery import deliver
from ztunnel.proxy.http_common import BAD_PATH, DENIED, Call, begin, normalize_target, record, request_of
from ztunnel.proxy.http_mirror import mirror
from ztunnel.proxy.relay import Side, TcpSide
from ztunnel.proxy.route import Hbone, Local, Passthrough, Refuse, classify
from ztunnel.rbac import Connection
from ztunnel.state.mesh import MeshIndex, Service
from ztunnel.state.mesh import Upstream as Endpoint
from ztunnel.tls import PeerIdentityError

log = logging.getLogger(__name__)
NO_HEALTHY_UPSTREAM = "no healthy upstream"


class OutboundHttp:
    """The router of one app connection to an HTTP Service port (`ztunnel.l7.session.Router`)."""

    def __init__(self, ctx: ProxyContext, pod: ServedPod, index: MeshIndex, source_ip: str, ip: str, port: int) -> None:
        self.ctx = ctx
        self.pod = pod
        self.index = index
        self.source_ip = source_ip
        self.ip = ip
        self.port = port
        self.parent: Service | None = index.by_vip.get(ip)
        """The Service the app addressed (by its VIP)."""
        self.source = peer_of(index.workloads.get(pod.uid), pod.identity, ctx.metrics.cluster)
        self._peers: dict[str, Peer] = {}
        """Endpoints' metric labels by IP, for the index version in `self.index` (a handful per connection)."""
        self._rng = random.Random()

    def admit(self, exchange: Exchange) -> Reply | None:
        ctx = self.ctx
        call = begin(exchange, self.source)
        # The current config for each request: routes, policies and endpoints that changed since it opened count.
        index = ctx.index
        if index is not self.index:
            self.index, self._peers = index, {}
            self.parent = index.by_vip.get(self.ip)
        parent = self.parent
        if parent is None or self.port not in parent.ports:
            ctx.metrics.errors[("outbound", "no_healthy_endpoint")] += 1
            return Reply(503, NO_HEALTHY_UPSTREAM, "UH", f"{self.ip}:{self.port} is no Service port any more")
        call.service = (parent.namespace, parent.name)
        now = time.monotonic()
        source = (self.pod.identity, self.source_ip)
        result = plan(index, ctx.clusters, parent, self.port, exchange.head, source, now, self._rng)
        if isinstance(result, Reply):
            return result
        call.plan = result
        call.service = (result.service.namespace, result.service.name)
        exchange.policy = result.policy
        exchange.response_edit = result.response_edit
        if result.mirrors:
            mirror(ctx, self, exchange, result.mirrors)
        return None

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        call = exchange.target
        assert isinstance(call, Call) and isinstance(call.plan, Plan)
        chosen = call.plan
        cluster = chosen.cluster
        decision = self.pick(cluster, chosen.service, chosen.hash_key, call.tried)
        call.route = decision
        up = decision.upstream
        destination = self._peers.get(up.ip)
        if destination is None:
            principal = decision.identity if isinstance(decision, Local) else None
            destination = self._peers[up.ip] = peer_of(up.workload, principal, self.ctx.metrics.cluster)
        call.destination = destination
        call.mutual_tls = not isinstance(decision, Passthrough)
        if isinstance(decision, Local):
            reply = self.authorize_local(exchange, call, decision)
            if reply is not None:
                raise UpstreamFailed(reply)
        call.tried.append(up.ip)
        # The limits that grant the slot take it back, even if a new policy version replaced them meanwhile.
        limits = cluster.limits
        if limits is not None:
            await self._slot(cluster, limits)
        cluster.begin(up.ip)
        try:
            upstream = await self.open(decision, call, fresh)
        except UpstreamFailed as failed:
            _free(limits)
            self._ended(cluster, chosen.service, up.ip, None)
            raise UpstreamFailed(failed.reply, failed.reply.flags == "UF") from None
        except BaseException:  # cancelled (the request's timeout, the client gone): not the endpoint's failure
            _free(limits)
            self._ended(cluster, chosen.service, up.ip, 0)
            raise
        upstream.owner = limits
        return upstream

    def pick(
        self, cluster: Cluster, service: Service, hash_key: str | bytes | None, tried: list[str]
    ) -> Local | Hbone | Passthrough:
        """The endpoint for a try (or a mirrored copy) and how to reach it; UpstreamFailed (503 UH) when none."""
        endpoints = cluster.candidates(service)
        chosen = cluster.choose(endpoints, time.monotonic(), hash_key, tried) if endpoints else None
        if chosen is None:
            why = "every endpoint is ejected" if endpoints else "no ready endpoint"
            self.ctx.metrics.errors[("outbound", "no_healthy_endpoint")] += 1
            raise UpstreamFailed(Reply(503, NO_HEALTHY_UPSTREAM, "UH", f"{cluster.service}:{cluster.port}: {why}"))
        up = Endpoint(chosen.ip, chosen.ports[cluster.port], self.index.workloads.get(chosen.workload_uid), service)
        decision = classify(self.ctx.pods, up)
        if isinstance(decision, Refuse):
            self.ctx.metrics.errors[("outbound", decision.reason)] += 1
            raise UpstreamFailed(Reply(503, decision.detail, "NR", decision.detail))
        return decision

    def authorize_local(self, exchange: Exchange, call: Call, decision: Local) -> Reply | None:
        """An endpoint this process serves: its inbound policies apply here (the request never leaves the node)."""
        ctx, pod, up = self.ctx, decision.pod, decision.upstream
        if not normalize_target(exchange.head):
            return BAD_PATH
        workload = self.index.workloads.get(pod.uid)
        conn = Connection(self.source_ip, self.pod.identity, up.ip, up.port)
        verdict = authorize_request(
            self.index.policies.authorization,
            pod.namespace,
            workload.labels if workload is not None else {},
            conn,
            request_of(exchange.head),
            self.index.root_namespaces,
        )
        ctx.metrics.decisions[("inbound", "allow" if verdict.allowed else "deny")] += 1
        call.note(verdict)
        return None if verdict.allowed else DENIED

    async def _slot(self, cluster: Cluster, limits: ClusterLimits[Waiter]) -> None:
        """A connection slot of a cluster with `connectionPool` limits: at once, after a wait in its pending
        queue, or UpstreamFailed 503 UO when the queue is full."""
        limit = limits.pool.max_connections
        if limit is None or limits.connections < limit:  # room: the common case, no waiter to make
            limits.connections += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        admission = limits.request_connection(waiter)
        if admission is Admission.OVERFLOW:
            cluster.count("overflows", "pending" if limits.pool.http1_max_pending_requests else "connections")
            raise UpstreamFailed(Reply(503, OVERFLOW, "UO", f"{cluster.service}:{cluster.port}: connection pool full"))
        if admission is Admission.QUEUED:
            try:
                await waiter
            except asyncio.CancelledError:
                if not limits.cancel(waiter):  # the slot was handed over as it was given up: pass it on
                    _free(limits)
                raise

    async def open(self, decision: Local | Hbone | Passthrough, call: Call, fresh: bool) -> Upstream:
        """A connection to the decided endpoint: a kept-alive one unless `fresh`, else a new one."""
        up = decision.upstream
        key = (self.pod.uid, self.source_ip, type(decision).__name__, up.ip, up.port)
        if not fresh:
            kept = self.ctx.http_upstreams.take(key)
            if kept is not None:
                return kept
        ctx, pod = self.ctx, self.pod
        call_labels = tcp_labels("source", call.source, call.destination, call.service, call.mutual_tls)
        channel = _CountedChannel(ctx.metrics, call_labels)
        upstream = Upstream(channel=channel, address=f"{up.ip}:{up.port}", key=key)
        try:
            if isinstance(decision, Hbone):
                await self._hbone(upstream, decision)
                return upstream
            if isinstance(decision, Local):
                side = await deliver(ctx, decision.pod, self.source_ip, up.ip, up.port, channel)
            else:
                sock = await ctx.sockets.connect(pod.netns_fd, up.ip, up.port)
                _, side = await asyncio.get_running_loop().create_connection(lambda: TcpSide(channel), sock=sock)
        except (OSError, TimeoutError, ssl.SSLError, IdentityError) as exc:
            reason = {PeerIdentityError: "peer_identity", IdentityError: "no_certificate"}.get(type(exc), "connect")
            ctx.count_error("outbound", reason, f"{self.source_ip} -> {up.ip}:{up.port}: {type(exc).__name__}: {exc}")
            raise UpstreamFailed(Reply(503, CONNECT_FAILURE, "UF", f"{type(exc).__name__}: {exc}")) from None
        channel.attach(side)
        return upstream

    async def _hbone(self, upstream: Upstream, decision: Hbone) -> None:
        """A CONNECT stream to the endpoint, answered 200 by a server that proved the endpoint's identity."""
        ctx, up = self.ctx, decision.upstream
        try:
            side = await open_stream(ctx, self.pod, self.source_ip, up, decision.identity, upstream.channel)
        except StreamRefused as refused:
            if refused.status in (401, 403):
                ctx.metrics.errors[("outbound", "denied")] += 1
                raise UpstreamFailed(DENIED) from None
            ctx.count_error("outbound", refused.reason, f"{self.source_ip} -> {up.ip}:{up.port}: {refused}")
            raise UpstreamFailed(Reply(503, CONNECT_FAILURE, "UF", str(refused))) from None
        upstream.channel.attach(side)

    def retry(self, exchange: Exchange) -> bool:
        call = exchange.target
        assert isinstance(call, Call) and isinstance(call.plan, Plan)
        cluster = call.plan.cluster
        limits = cluster.limits
        if limits is not None:
            if not limits.begin_retry():
                cluster.count("overflows", "retries")
                return False
            call.retrying = True
        cluster.count("retries")
        return True

    def attempted(self, exchange: Exchange, status: int | None) -> None:
        call = exchange.target
        assert isinstance(call, Call) and isinstance(call.plan, Plan) and call.tried
        cluster = call.plan.cluster
        if call.retrying and cluster.limits is not None:
            cluster.limits.end_retry()
        call.retrying = False
        self._ended(cluster, call.plan.service, call.tried[-1], status)

    def _ended(self, cluster: Cluster, service: Service, endpoint: str, status: int | None) -> None:
        endpoints = [e.ip for e in service.endpoints] if cluster.outlier is not None else ()
        ejected = cluster.end(endpoint, status, time.monotonic(), endpoints)
        if ejected:
            log.info("outlier detection ejected %s from %s:%d", endpoint, cluster.service, cluster.port)

    def release(self, upstream: Upstream, reusable: bool) -> None:
        if isinstance(upstream.channel, _CountedChannel):
            upstream.channel.count()
        limits = upstream.owner
        if isinstance(limits, ClusterLimits):
            upstream.owner = None
            upstream.requests += 1
            if not limits.reusable(upstream.requests):
                reusable = False  # maxRequestsPerConnection: this connection has carried its share
            _free(limits)
        self.ctx.http_upstreams.put(upstream, reusable)

    def done(self, exchange: Exchange) -> None:
        call = exchange.target if isinstance(exchange.target, Call) else None
        both = call is not None and isinstance(call.route, Local)
        record(self.ctx.metrics, exchange, call, ("source", "destination") if both else ("source",), self.source_ip,
               self.source)  # fmt: skip


def _free(limits: ClusterLimits[Waiter] | None) -> None:
    """A connection slot ends: to the first waiter still waiting, or freed (nothing without limits)."""
    if limits is None:
        return
    waiter = limits.connection_closed()
    # A waiter already cancelled finds in its handler that it was handed the slot, and passes it on.
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class _CountedChannel(Channel):
    """An upstream connection, counted in istio_tcp_* as the L4 path counts one: opened when made (labelled with
    the endpoint it reaches), its bytes after each request (a kept-alive connection may live long), closed at
    its end. The app's own connection is not counted at L7: it has no single destination."""

    def __init__(self, metrics: Metrics, labels: Labels) -> None:
        super().__init__()
        self.metrics = metrics
        self.labels = labels
        self._counted_sent = 0
        self._counted_received = 0
        metrics.opened[labels] += 1

    def count(self) -> None:
        side = self.side
        received = side.received if side is not None else self._counted_received
        # Istio's meaning: "sent" is the response (what the destination sent), "received" the request.
        self.metrics.sent[self.labels] += received - self._counted_received
        self.metrics.received[self.labels] += self.sent - self._counted_sent
        self._counted_received, self._counted_sent = received, self.sent

    def side_lost(self, side: Side, error: BaseException | None) -> None:
        if not self.lost:
            self.count()
            self.metrics.closed[self.labels] += 1
        super().side_lost(side, error)
