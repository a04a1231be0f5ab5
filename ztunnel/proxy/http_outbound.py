"""Outbound HTTP: a pod's connection to an HTTP Service port, proxied request by request (source side).

`outbound.py` hands a captured connection here when its destination is a Service port that is HTTP (see
`meshlet_contracts.protocols`). Each request picks its own endpoint (round robin over the ready ones, as the
L4 path does per connection), so one keep-alive connection from the app spreads its requests over every
endpoint, and reaches it by the same route kinds as L4 (`route.py`):
- `Hbone`: a CONNECT stream to the endpoint's node (mTLS, the source pod's certificate), carrying HTTP/1.1
  keep-alive; the stream is kept for the next request to that endpoint from this pod (`UpstreamPool`), so a
  request costs no CONNECT round trip once warm. One stream per request would pay that round trip every
  time; one stream per endpoint keeps every request on the one mTLS connection the L4 path uses too;
- `Local`: an endpoint this process serves: its policies are decided here, per request, then its app is
  reached directly (both reporters counted here, as on the L4 path);
- `Passthrough`: an endpoint outside the mesh, in plaintext from the pod's netns.
A destination that answers the CONNECT 401/403 denied the connection: the app gets 403 `RBAC: access denied`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from ztunnel.identity.manager import IdentityError
from ztunnel.l7.authz import authorize_request
from ztunnel.l7.channel import Channel
from ztunnel.l7.exchange import CONNECT_FAILURE, Exchange, Reply, Upstream, UpstreamFailed
from ztunnel.metrics import Labels, Metrics, Peer, tcp_labels
from ztunnel.proxy.connect import StreamRefused, open_stream
from ztunnel.proxy.context import ProxyContext, ServedPod, peer_of
from ztunnel.proxy.delivery import deliver
from ztunnel.proxy.http_common import BAD_PATH, DENIED, Call, begin, normalize_target, record, request_of
from ztunnel.proxy.relay import Side, TcpSide
from ztunnel.proxy.route import Hbone, Local, Passthrough, Refuse, route
from ztunnel.rbac import Connection
from ztunnel.state.mesh import MeshIndex
from ztunnel.tls import PeerIdentityError

log = logging.getLogger(__name__)
NO_HEALTHY_UPSTREAM = Reply(503, "no healthy upstream", "UH")


class OutboundHttp:
    """The router of one app connection to an HTTP Service port (`ztunnel.l7.session.Router`)."""

    def __init__(self, ctx: ProxyContext, pod: ServedPod, index: MeshIndex, source_ip: str, ip: str, port: int) -> None:
        self.ctx = ctx
        self.pod = pod
        self.index = index
        self.source_ip = source_ip
        self.ip = ip
        self.port = port
        self.source = peer_of(index.workloads.get(pod.uid), pod.identity, ctx.metrics.cluster)
        self._peers: dict[str, Peer] = {}
        """Endpoints' metric labels by IP, for the index version in `self.index` (a handful per connection)."""

    def admit(self, exchange: Exchange) -> Reply | None:
        ctx = self.ctx
        call = begin(exchange, self.source)
        # The current config for each request: endpoints that came or went since the connection opened count.
        index = ctx.index
        if index is not self.index:
            self.index, self._peers = index, {}
        decision = route(index, ctx.pods, self.ip, self.port)
        if isinstance(decision, Refuse):
            ctx.metrics.errors[("outbound", decision.reason)] += 1
            if decision.reason == "no_healthy_endpoint":
                return NO_HEALTHY_UPSTREAM
            return Reply(503, decision.detail, "NR")
        up = decision.upstream
        call.route = decision
        call.service = (up.service.namespace, up.service.name) if up.service is not None else None
        destination = self._peers.get(up.ip)
        if destination is None:
            principal = decision.identity if isinstance(decision, Local) else None
            destination = self._peers[up.ip] = peer_of(up.workload, principal, ctx.metrics.cluster)
        call.destination = destination
        call.mutual_tls = not isinstance(decision, Passthrough)
        if isinstance(decision, Local):
            return self._authorize_local(exchange, call, decision)
        return None

    def _authorize_local(self, exchange: Exchange, call: Call, decision: Local) -> Reply | None:
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
            ctx.root_namespace,
        )
        ctx.metrics.decisions[("inbound", "allow" if verdict.allowed else "deny")] += 1
        call.note(verdict)
        return None if verdict.allowed else DENIED

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        call = exchange.target
        assert isinstance(call, Call)
        decision = call.route
        assert isinstance(decision, Local | Hbone | Passthrough)
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

    def release(self, upstream: Upstream, reusable: bool) -> None:
        if isinstance(upstream.channel, _CountedChannel):
            upstream.channel.count()
        self.ctx.http_upstreams.put(upstream, reusable)

    def done(self, exchange: Exchange) -> None:
        call = exchange.target if isinstance(exchange.target, Call) else None
        both = call is not None and isinstance(call.route, Local)
        record(self.ctx.metrics, exchange, call, ("source", "destination") if both else ("source",), self.source_ip,
               self.source)  # fmt: skip


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
