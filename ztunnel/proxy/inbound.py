"""Inbound: connections to an enrolled pod, over HBONE (15008) or in plaintext (15006), to its app.

HBONE: the TLS handshake has verified the client's chain; its SPIFFE identity must belong to our trust
domain. Each CONNECT stream is authorized (L4 AuthorizationPolicy) and, when allowed, connected to the
app from inside the pod's netns with the caller's IP as source (IP_TRANSPARENT), so the app and its
logs see who called; the reply 200 opens the tunnel, 401 refuses it, 503 says the app refused. A drain
(upgrade, SIGTERM) tells each connection GOAWAY and serves its streams to their end.
Plaintext: PeerAuthentication decides whether it is accepted at all (STRICT refuses), then the same
authorization applies with no identity (`delivery.py`, shared with outbound's same-node path).
Neither serves before ztunnel holds config (policies unknown), nor to ztunnel's own ports (a self-loop).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from meshlet_contracts.identity import IdentityError, parse_port
from meshlet_contracts.ports import RESERVED_PORTS
from ztunnel.hbone import ErrorCode, RequestReceived
from ztunnel.metrics import CONNECT, DENY, tcp_labels, with_flags
from ztunnel.proxy.context import Accepted, ProxyContext, ServedPod, peer_of, source_peer
from ztunnel.proxy.delivery import allowed, deliver, failed, refused
from ztunnel.proxy.hbone import HboneConnection, StreamSide
from ztunnel.proxy.http_entry import OpenOnce, relay_handed_back, serve_http
from ztunnel.proxy.http_inbound import InboundHttp, connection_allowed, l7_reason
from ztunnel.proxy.relay import Tunnel
from ztunnel.rbac import Connection, mtls_mode
from ztunnel.tls import PeerIdentityError, peer_identity

log = logging.getLogger(__name__)


class InboundHbone(HboneConnection):
    """A 15008 connection into one pod: checks the client's identity, then serves its CONNECT streams.

    What one peer (source identity, source IP) holds is bounded by `ctx.limits` (see `limits.py`): a
    connection over its limit is told GOAWAY(ENHANCE_YOUR_CALM) and closed, a stream over it is refused.
    """

    def __init__(self, ctx: ProxyContext, pod: ServedPod) -> None:
        limits = ctx.limits
        super().__init__(
            client=False,
            on_request=_request_of_inbound,  # not self._request: a connection holding its own bound method is a cycle
            settings=limits.h2_settings,
            metrics=ctx.metrics,
            preface_timeout=limits.preface_timeout,
            idle_timeout=limits.idle_timeout,
        )
        self.ctx = ctx
        self.pod = pod
        self.source_ip = ""
        self.rejected = False
        self.admitted = False
        """Counted in `ctx.peer_load` (released when the connection ends)."""
        self.handshake_check: asyncio.TimerHandle | None = None
        """Counts a failed TLS handshake (`serving.py`); cancelled once the handshake completed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.handshake_check is not None:  # the handshake completed: nothing to count
            self.handshake_check.cancel()
            self.handshake_check = None
        try:
            self.peer_identity = peer_identity(transport.get_extra_info("ssl_object"), self.ctx.trust_domain)
        except (PeerIdentityError, ssl.SSLError) as exc:
            self.ctx.count_error("inbound", "peer_identity", exc)
            self.rejected = True
            transport.abort()  # type: ignore[attr-defined]
            return
        peer = transport.get_extra_info("peername")
        self.source_ip = peer[0] if peer else ""
        super().connection_made(transport)
        ctx, limit = self.ctx, self.ctx.limits.max_connections_per_peer
        over = ctx.peer_load.admit_connection(self.peer_identity, self.source_ip, limit)
        if over is not None:
            self.rejected = True
            self.count_error("peer_connection_limit", f"{over} has {limit} HBONE connections open already")
            self.close(ErrorCode.ENHANCE_YOUR_CALM, "too many connections from this peer")
            return
        self.admitted = True
        ctx.inbound_hbone.add(self)
        if ctx.draining:  # accepted just before the listener closed: the client retries on the new ztunnel
            self.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.inbound_hbone.discard(self)
        super().connection_lost(exc)  # ends the streams, which releases them
        if self.admitted:
            self.admitted = False
            self.ctx.peer_load.release_connection(self.peer_identity, self.source_ip)

    def stream_done(self, side: StreamSide) -> None:
        super().stream_done(side)
        self.ctx.peer_load.release_stream(self.peer_identity, self.source_ip)  # every accepted side was admitted

    def _request(self, conn: HboneConnection, ev: RequestReceived) -> None:
        ctx, limit = self.ctx, self.ctx.limits.max_streams_per_peer
        over = ctx.peer_load.admit_stream(self.peer_identity, self.source_ip, limit)
        if over is not None:
            # REFUSED_STREAM: not processed, so the client may safely retry it, later or elsewhere.
            self.count_error("peer_stream_limit", f"{over} has {limit} streams open already")
            self.h2.reset_stream(ev.stream_id, ErrorCode.REFUSED_STREAM)
            return
        tunnel = Tunnel("inbound", ctx.metrics, ctx.tunnels, f"{self.source_ip} -> {ev.authority}")
        side = self.accept(ev.stream_id, tunnel)
        tunnel.downstream = side
        # Draining still serves: the streams this connection took before its GOAWAY (the pod's netns, config
        # and certificates are all still held); the ones after it the HTTP/2 layer refused, to be retried.
        ctx.spawn(self._serve_guarded(side, tunnel, ev.authority), name=f"inbound-{tunnel.id}")

    async def _serve_guarded(self, side: StreamSide, tunnel: Tunnel, authority: str) -> None:
        """`_serve`, with the one guard of this stream: a bug answers 503 (or resets the stream when it was
        answered already), is counted and logged, and costs this stream only, never a silent hang."""
        try:
            await self._serve(side, tunnel, authority)
        except Exception as exc:
            self.count_error("internal", f"{self.source_ip} -> {authority}: {exc!r}", exc)
            self.respond(side.stream_id, 503)
            side.abort()

    async def _serve(self, side: StreamSide, tunnel: Tunnel, authority: str) -> None:
        ctx, pod = self.ctx, self.pod
        host, _, port_text = authority.rpartition(":")
        if host not in pod.ips:
            ctx.count_error("inbound", "wrong_destination", f"{authority} is not an address of {pod.name}")
            self.respond(side.stream_id, 400)
            return
        try:
            port = parse_port(port_text)  # ASCII digits only: int() would also read '٨٠٨٠' as 8080
        except IdentityError as exc:
            ctx.count_error("inbound", "bad_authority", f"{authority!r}: {exc}")
            self.respond(side.stream_id, 400)
            return
        if port in RESERVED_PORTS:
            ctx.count_error("inbound", "self_loop", f"{authority}: port {port} is ztunnel's, not the app's")
            self.respond(side.stream_id, 400)
            return
        if not await ctx.has_config():
            ctx.count_error("inbound", "no_config", f"{authority}: no config from control yet")
            self.respond(side.stream_id, 503)
            return
        index = ctx.index
        source = source_peer(ctx.metrics, index.by_ip.get(self.source_ip), self.peer_identity)
        destination = peer_of(index.workloads.get(pod.uid), pod.identity, ctx.metrics.cluster)
        labels = tcp_labels("destination", source, destination, None, True)
        request = Connection(self.source_ip, self.peer_identity, host, port)
        l7 = l7_reason(ctx, index, pod, port)
        if l7 is not None:
            if not connection_allowed(ctx, index, pod, request, "inbound"):
                ctx.metrics.errors[("inbound", "denied")] += 1
                refused(ctx, tunnel, "denied", with_flags(labels, DENY))
                self.respond(side.stream_id, 401)
                return
            self.respond(side.stream_id, 200)
            opened = OpenOnce(ctx, tunnel, labels)  # the stream is a connection as at L4; its requests count too
            router = InboundHttp(ctx, pod, request, source, True, "inbound", on_first=opened)
            handback = await serve_http(ctx, side, tunnel, router, sniff=not l7[1])
            if handback is not None:
                await relay_handed_back(ctx, pod, side, tunnel, request, handback, "inbound", opened)
            opened()
            return
        if not allowed(ctx, index, pod, request, "inbound"):
            ctx.metrics.errors[("inbound", "denied")] += 1
            refused(ctx, tunnel, "denied", with_flags(labels, DENY))
            self.respond(side.stream_id, 401)
            return
        try:
            upstream = await deliver(ctx, pod, self.source_ip, host, port, tunnel)
        except (OSError, TimeoutError) as exc:
            ctx.count_error("inbound", "app_unreachable", f"{pod.namespace}/{pod.name}:{port}: {exc}")
            refused(ctx, tunnel, "app_unreachable", with_flags(labels, CONNECT))
            self.respond(side.stream_id, 503)
            return
        if side.closed:
            upstream.abort()
            return
        self.respond(side.stream_id, 200)
        tunnel.established(upstream, labels)


def _request_of_inbound(conn: HboneConnection, ev: RequestReceived) -> None:
    """`InboundHbone._request` as its connection's handler. A plain function: a bound method stored on the
    connection would be a reference cycle, keeping every closed connection (with its TLS and HPACK state)
    until a full garbage collection instead of freeing it when its transport lets go."""
    cast(InboundHbone, conn)._request(conn, ev)


class InboundPlaintext(Accepted):
    """A 15006 connection: plaintext from outside the mesh to an enrolled pod."""

    direction = "inbound_plaintext"

    async def serve(self) -> None:
        ctx, pod, tunnel = self.ctx, self.pod, self.tunnel
        assert self.transport is not None
        try:
            ip, port = ctx.sockets.inbound_destination(self.transport.get_extra_info("socket"))
            source_ip = self.transport.get_extra_info("peername")[0]
        except (OSError, TypeError) as exc:
            failed(ctx, tunnel, "inbound_plaintext", "original_dst", exc)
            return
        tunnel.describe = f"{source_ip} -> {ip}:{port}"
        if not await self.admitted(port, RESERVED_PORTS):
            return
        index = ctx.index
        workload = index.workloads.get(pod.uid)
        mode = mtls_mode(
            index.policies.peer_authentication,
            pod.namespace,
            workload.labels if workload is not None else {},
            port,
            index.root_namespaces,
        )
        cluster = ctx.metrics.cluster
        source = peer_of(index.by_ip.get(source_ip), None, cluster)
        labels = tcp_labels("destination", source, peer_of(workload, None, cluster), None, False)
        if mode == "STRICT":
            # Refused by PeerAuthentication, a policy: DENY, as Istio's ztunnel reports it.
            refused(ctx, tunnel, "strict_mtls", with_flags(labels, DENY))
            failed(ctx, tunnel, "inbound_plaintext", "strict_mtls", f"{tunnel.describe}: plaintext refused (STRICT)")
            return
        conn = Connection(source_ip, None, ip, port)
        l7 = l7_reason(ctx, index, pod, port)
        if l7 is not None:
            if not connection_allowed(ctx, index, pod, conn, "inbound_plaintext"):
                ctx.metrics.errors[("inbound_plaintext", "denied")] += 1
                refused(ctx, tunnel, "denied", with_flags(labels, DENY))
                tunnel.fail()
                return
            opened = OpenOnce(ctx, tunnel, labels)
            router = InboundHttp(ctx, pod, conn, source, False, "inbound_plaintext", on_first=opened)
            handback = await serve_http(ctx, self, tunnel, router, sniff=not l7[1])
            if handback is not None:  # not HTTP/1: the L4 decision (HTTP rules fail closed), then the relay
                await relay_handed_back(ctx, pod, self, tunnel, conn, handback, "inbound_plaintext", opened)
            opened()
            return
        if not allowed(ctx, index, pod, conn, "inbound_plaintext"):
            ctx.metrics.errors[("inbound_plaintext", "denied")] += 1
            refused(ctx, tunnel, "denied", with_flags(labels, DENY))
            tunnel.fail()
            return
        try:
            upstream = await deliver(ctx, pod, source_ip, ip, port, tunnel)
        except (OSError, TimeoutError) as exc:
            refused(ctx, tunnel, "app_unreachable", with_flags(labels, CONNECT))
            failed(ctx, tunnel, "inbound_plaintext", "app_unreachable", f"{tunnel.describe}: {exc}")
            return
        tunnel.established(upstream, labels)
