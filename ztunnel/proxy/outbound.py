"""Outbound: a pod's captured connection (15001 in its netns) to wherever it was going.

The original destination comes from the socket factory (SO_ORIGINAL_DST, or the eBPF map); the source
workload is the pod owning the netns. `route.py` decides where the connection goes, then:
- `Local` (an enrolled workload served by this very process): authorize, then connect to its app directly;
- `Hbone` (an enrolled workload elsewhere): a CONNECT stream over a pooled mTLS connection to its 15008,
  opened from the source pod's netns with the source pod's certificate (the pool dials); the server must
  prove the destination's identity;
- `Passthrough`: plaintext from the pod's netns, as if there were no mesh.
A Service port with a TrafficPolicy has its endpoint chosen by the policy's load balancer, and its connection
limit and outlier detection applied, per connection (`tcp_cluster.py`); any other VIP is round robin.
Nothing is forwarded before ztunnel holds a complete config (a restart's first moments, control away
with no cached copy): the connection waits briefly, then is reset. ztunnel's own ports are never a
destination (a self-loop would accept and re-dial itself without end).
Any failure resets the app's connection (never a clean close) and is counted by reason; once routed, also in
istio_tcp_* with response_flags CONNECT (the destination's side says DENY when its policy refused).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from meshlet_contracts.ports import PROXY_PORTS
from ztunnel.identity.manager import IdentityError
from ztunnel.l7.pool_limits import OVERFLOW_FLAG
from ztunnel.metrics import CONNECT, DENY, tcp_labels, with_flags
from ztunnel.proxy.connect import StreamRefused, open_stream
from ztunnel.proxy.context import Accepted, peer_of
from ztunnel.proxy.delivery import allowed, deliver, failed, refused
from ztunnel.proxy.http_entry import serve_http
from ztunnel.proxy.http_outbound import OutboundHttp
from ztunnel.proxy.relay import Side, TcpSide
from ztunnel.proxy.route import Hbone, Local, Passthrough, Refuse, route
from ztunnel.proxy.tcp_cluster import ClusterConnection, under_policy
from ztunnel.rbac import Connection
from ztunnel.tls import PeerIdentityError

log = logging.getLogger(__name__)


class Outbound(Accepted):
    """A connection accepted on a pod's 15001."""

    direction = "outbound"

    async def serve(self) -> None:
        ctx, tunnel = self.ctx, self.tunnel
        assert self.transport is not None
        try:
            peer = self.transport.get_extra_info("peername")
            source_ip = peer[0]
            ip, port = ctx.sockets.outbound_destination(self.transport.get_extra_info("socket"), peer)
        except (OSError, TypeError) as exc:
            failed(ctx, tunnel, "outbound", "original_dst", exc)
            return
        tunnel.describe = f"{source_ip} -> {ip}:{port}"
        if not await self.admitted(port, PROXY_PORTS):
            return
        index = ctx.index
        held: ClusterConnection | None = None
        try:
            addressed = index.by_vip.get(ip)
            if addressed is not None and port in addressed.http_ports:
                router = OutboundHttp(ctx, self.pod, index, source_ip, ip, port)
                handback = await serve_http(ctx, self, tunnel, router, sniff=False)
                if handback is None:
                    return
                self.replay(handback)  # HTTP/2 with prior knowledge: carried at L4, as any TCP connection
            if addressed is not None and index.traffic:  # a TrafficPolicy's per-connection parts (tcp_cluster.py)
                held = under_policy(ctx.clusters, index, addressed, port)
            decision = route(index, ctx.pods, ip, port) if held is None else held.pick(index, ctx.pods, port, source_ip)
        except Exception:  # a bug (or a config item the index cannot take) costs this connection only
            self._internal_error()
            return
        if isinstance(decision, Refuse):
            failed(ctx, tunnel, "outbound", decision.reason, f"{tunnel.describe}: {decision.detail}")
            return
        up = decision.upstream
        cluster = ctx.metrics.cluster
        source = peer_of(index.workloads.get(self.pod.uid), self.pod.identity, cluster)
        service = (up.service.namespace, up.service.name) if up.service is not None else None
        mtls = not isinstance(decision, Passthrough)
        destination = peer_of(up.workload, decision.identity if isinstance(decision, Local) else None, cluster)
        labels = tcp_labels("source", source, destination, service, mtls)
        if held is not None and not held.admit(tunnel):  # over tcp.maxConnections: no queue at L4, reset
            refused(ctx, tunnel, "overflow", with_flags(labels, OVERFLOW_FLAG))
            failed(ctx, tunnel, "outbound", "overflow", f"{tunnel.describe}: {held.cluster.service} pool full")
            return
        try:
            if isinstance(decision, Local):
                local = decision.pod
                dest_labels = tcp_labels("destination", source, destination, service, True)
                if not allowed(ctx, index, local, Connection(source_ip, self.pod.identity, up.ip, up.port), "inbound"):
                    ctx.metrics.errors[("outbound", "denied")] += 1
                    # As across nodes: the destination's side says DENY, the source's that it could not connect.
                    refused(ctx, tunnel, "denied", with_flags(labels, CONNECT), with_flags(dest_labels, DENY))
                    tunnel.fail()
                    return
                try:
                    upstream: Side = await deliver(ctx, local, source_ip, up.ip, up.port, tunnel)
                except (OSError, TimeoutError):
                    refused(ctx, tunnel, "connect", with_flags(labels, CONNECT), with_flags(dest_labels, CONNECT))
                    raise
                if held is not None:
                    held.connected()
                tunnel.established(upstream, labels, dest_labels)
                return
            if isinstance(decision, Hbone):
                upstream = await open_stream(ctx, self.pod, source_ip, up, decision.identity, tunnel)
            else:
                sock = await ctx.sockets.connect(self.pod.netns_fd, up.ip, up.port)
                _, upstream = await asyncio.get_running_loop().create_connection(lambda: TcpSide(tunnel), sock=sock)
        except StreamRefused as exc:
            if held is not None and exc.reason != "denied":  # a denial says nothing of the endpoint's health
                held.connect_failed()
            refused(ctx, tunnel, exc.reason, with_flags(labels, CONNECT))
            failed(ctx, tunnel, "outbound", exc.reason, f"{tunnel.describe}: {exc}")
            return
        except (OSError, TimeoutError, ssl.SSLError, IdentityError) as exc:
            reason = {PeerIdentityError: "peer_identity", IdentityError: "no_certificate"}.get(type(exc), "connect")
            if held is not None and reason != "no_certificate":  # the source's own certificate is not the endpoint's
                held.connect_failed()
            if not tunnel.labels:
                refused(ctx, tunnel, reason, with_flags(labels, CONNECT))
            failed(ctx, tunnel, "outbound", reason, f"{tunnel.describe}: {type(exc).__name__}: {exc}")
            return
        except Exception:  # a bug must cost this connection only, never the listener or the process
            self._internal_error()
            return
        if held is not None:
            held.connected()
        tunnel.established(upstream, labels)

    def _internal_error(self) -> None:
        """Count, log (with the traceback) and reset a connection that a bug failed."""
        self.ctx.metrics.errors[("outbound", "internal")] += 1
        log.exception("outbound %s failed", self.tunnel.describe)
        self.tunnel.failure = "internal"
        self.tunnel.fail()
