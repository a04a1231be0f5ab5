"""Outbound: a pod's captured connection (15001 in its netns) to wherever it was going.

The original destination comes from SO_ORIGINAL_DST; the source workload is the pod owning the netns.
A service VIP resolves to one endpoint (round robin). Then:
- an enrolled workload served by this very process: authorize, then connect to its app directly
  (same node: no TLS needed, policy never skipped);
- an enrolled workload elsewhere: an HBONE stream over a pooled mTLS connection to its 15008, opened
  from the source pod's netns, with the source pod's certificate; the server must prove the
  destination's identity;
- anything else: plaintext passthrough from the pod's netns, as if there were no mesh.
Nothing is forwarded before ztunnel holds a complete config (a restart's first moments, control away
with no cached copy): the connection waits briefly, then is reset. ztunnel's own ports are never a
destination (a self-loop would accept and re-dial itself without end).
Any failure resets the app's connection (never a clean close) and is counted by reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from meshlet_contracts.ports import PROXY_PORTS, RESERVED_PORTS
from ztunnel.identity.manager import IdentityError
from ztunnel.metrics import tcp_labels
from ztunnel.proxy import sockets
from ztunnel.proxy.context import Accepted, peer_of
from ztunnel.proxy.hbone import HboneConnection
from ztunnel.proxy.inbound import HBONE_PORT, allowed, deliver
from ztunnel.proxy.relay import Side, TcpSide
from ztunnel.rbac import Connection
from ztunnel.state.mesh import NoHealthyEndpoint, Upstream, Workload
from ztunnel.tls import PeerIdentityError, peer_identity

log = logging.getLogger(__name__)
RESPONSE_TIMEOUT = 10.0


class Outbound(Accepted):
    """A connection accepted on a pod's 15001."""

    direction = "outbound"

    async def serve(self) -> None:
        ctx, tunnel = self.ctx, self.tunnel
        assert self.transport is not None
        try:
            peer = self.transport.get_extra_info("peername")
            source_ip = peer[0]
            ip, port = ctx.origdst.outbound(self.transport.get_extra_info("socket"), peer)
        except (OSError, TypeError) as exc:
            ctx.count_error("outbound", "original_dst", exc)
            tunnel.fail()
            return
        tunnel.describe = f"{source_ip} -> {ip}:{port}"
        if not await self.admitted(port, PROXY_PORTS):
            return
        index = ctx.index
        try:
            up = index.resolve(ip, port)
        except NoHealthyEndpoint as exc:
            ctx.count_error("outbound", "no_healthy_endpoint", exc)
            tunnel.fail()
            return
        if up.port in RESERVED_PORTS and up.workload is not None and up.workload.enrolled:
            ctx.count_error("outbound", "self_loop", f"{tunnel.describe}: port {up.port} is a ztunnel port")
            tunnel.fail()
            return
        source = index.workloads.get(self.pod.uid)
        service = (up.service.namespace, up.service.name) if up.service is not None else None
        destination = up.workload
        try:
            if destination is not None and destination.enrolled:
                local = ctx.pods.get(destination.uid)
                if local is not None:
                    if not allowed(
                        ctx, index, local, Connection(source_ip, self.pod.identity, up.ip, up.port), "inbound"
                    ):
                        ctx.metrics.errors[("outbound", "denied")] += 1
                        tunnel.fail()
                        return
                    upstream: Side = await deliver(ctx, local, source_ip, up.ip, up.port, tunnel)
                    src, dst = peer_of(source, self.pod.identity), peer_of(destination, destination.identity)
                    tunnel.established(
                        upstream,
                        tcp_labels("source", src, dst, service, True),
                        tcp_labels("destination", src, dst, service, True),
                    )
                    return
                upstream = await self._hbone(source_ip, up, destination)
                labels = tcp_labels("source", peer_of(source, self.pod.identity), peer_of(destination), service, True)
            else:
                sock = await sockets.connect(self.pod.netns_fd, up.ip, up.port)
                _, upstream = await asyncio.get_running_loop().create_connection(lambda: TcpSide(tunnel), sock=sock)
                labels = tcp_labels("source", peer_of(source, self.pod.identity), peer_of(destination), service, False)
        except _Refused as exc:
            ctx.count_error("outbound", exc.reason, f"{tunnel.describe}: {exc}")
            tunnel.fail()
            return
        except (OSError, TimeoutError, ssl.SSLError, IdentityError) as exc:
            reason = {PeerIdentityError: "peer_identity", IdentityError: "no_certificate"}.get(type(exc), "connect")
            ctx.count_error("outbound", reason, f"{tunnel.describe}: {type(exc).__name__}: {exc}")
            tunnel.fail()
            return
        except Exception:  # a bug must cost this connection only, never the listener or the process
            ctx.metrics.errors[("outbound", "internal")] += 1
            log.exception("outbound %s failed", tunnel.describe)
            tunnel.fail()
            return
        tunnel.established(upstream, labels)

    async def _hbone(self, source_ip: str, up: Upstream, destination: Workload) -> Side:
        ctx, pod = self.ctx, self.pod
        cert = await ctx.identities.certificate(pod.identity)
        tls = ctx.tls.client(cert)
        loop = asyncio.get_running_loop()

        async def dial() -> HboneConnection:
            sock = await sockets.connect(pod.netns_fd, up.ip, HBONE_PORT)
            transport, conn = await loop.create_connection(
                lambda: HboneConnection(client=True, metrics=ctx.metrics),  # its HTTP/2 failures are counted
                sock=sock,
                ssl=tls,
                server_hostname="",
                ssl_handshake_timeout=sockets.CONNECT_TIMEOUT,
            )
            try:
                conn.peer_identity = peer_identity(transport.get_extra_info("ssl_object"), ctx.trust_domain)
                if conn.peer_identity != destination.identity:
                    raise PeerIdentityError(f"{up.ip}:15008 is {conn.peer_identity}, expected {destination.identity}")
            except BaseException:
                transport.abort()
                raise
            return conn

        assert ctx.pool is not None
        conn = await ctx.pool.get((pod.identity, source_ip, up.ip, destination.identity), dial)
        side, response = conn.open(f"{up.ip}:{up.port}", self.tunnel, [("forwarded", f"for={source_ip}")])
        try:
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                status = await response
        except BaseException:
            side.abort()
            raise
        if status != 200:
            side.abort()
            raise _Refused("denied" if status in (401, 403) else f"hbone_{status}", f"CONNECT answered {status}")
        return side


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
