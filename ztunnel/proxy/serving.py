"""Accepting on each served pod's listeners: the bridge between ZDS (which pods) and the proxy.

When the agent hands over a pod, its three listeners are already open (`ztunnel.inpod`); here each gets
an asyncio server: 15001 and 15006 at once, 15008 as soon as the pod's certificate is in hand (until
then connecting clients wait in the kernel's backlog rather than being refused). Removing a pod closes
its servers; connections already relayed continue until they end.
"""

from __future__ import annotations

import asyncio
import logging

from meshlet_contracts.wire import spiffe_id
from meshlet_contracts.zds import WorkloadInfo
from ztunnel.identity.manager import IdentityError
from ztunnel.inpod.listeners import PodListeners
from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.inbound import InboundHbone, InboundPlaintext
from ztunnel.proxy.outbound import Outbound

log = logging.getLogger(__name__)
CERT_RETRY_MAX = 10.0
HANDSHAKE_TIMEOUT = 5.0


class PodServing:
    """Implements the workload manager's hooks for a `ProxyContext`."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx

    def pod_added(self, uid: str, info: WorkloadInfo | None, listeners: PodListeners) -> None:
        ctx = self.ctx
        if info is None:  # a keep without details: what control says about the uid
            known = ctx.index.workloads.get(uid)
            if known is None:
                raise IdentityError(f"pod {uid} was handed over without its details and control does not know it")
            info = WorkloadInfo(known.name, known.namespace, known.service_account, known.ips)
        pod = ServedPod(
            uid=uid,
            name=info.name,
            namespace=info.namespace,
            service_account=info.service_account,
            identity=spiffe_id(ctx.trust_domain, info.namespace, info.service_account),
            ips=info.ips,
            netns_fd=listeners.netns_fd,
        )
        ctx.pods[uid] = pod
        for ip in pod.ips:
            ctx.pods_by_ip[ip] = pod
        self._track()
        # The sockets are listening already: connections made before the servers start wait in the
        # kernel's backlog, so starting them in a task loses nothing.
        ctx.spawn(self._serve(pod, listeners), name=f"servers-{pod.name}")

    async def _serve(self, pod: ServedPod, listeners: PodListeners) -> None:
        ctx, loop = self.ctx, asyncio.get_running_loop()
        outbound = await loop.create_server(lambda: Outbound(ctx, pod), sock=listeners.sockets["outbound"])
        plaintext = await loop.create_server(
            lambda: InboundPlaintext(ctx, pod), sock=listeners.sockets["inbound_plaintext"]
        )
        if ctx.pods.get(pod.uid) is not pod or ctx.draining:
            outbound.close()
            plaintext.close()
            return
        pod.servers += [outbound, plaintext]
        delay = 0.2
        while ctx.pods.get(pod.uid) is pod:
            try:
                cert = await ctx.identities.certificate(pod.identity)
                break
            except Exception as exc:  # control away or refusing: keep the listener, retry
                pod.error = f"certificate: {exc}"
                log.warning("no certificate yet for %s (%s); retrying in %.1fs", pod.identity, exc, delay)
                # Or sooner: the identity manager keeps trying (about once a second while control is away)
                # and wakes us as the certificate arrives, so 15008 opens right after control is back.
                await ctx.identities.wait_issued(pod.identity, delay)
                delay = min(delay * 2, CERT_RETRY_MAX)
        else:
            return  # removed meanwhile
        if ctx.draining or "hbone" not in listeners.sockets:
            return  # drained meanwhile: its listeners are closed, a newer ztunnel takes new connections
        loop = asyncio.get_running_loop()

        def accepted() -> InboundHbone:
            conn = InboundHbone(ctx, pod)
            # asyncio reports a failed server handshake to nobody (the protocol never hears of it), so a
            # connection whose handshake has not completed once the timeout passed is counted then. The timer
            # holds the pod, not the connection: a completed handshake cancels it (connection_made), so a
            # short connection is freed as it closes, not 5.5 s later with its TLS state (~40 KB each).
            conn.handshake_check = loop.call_later(HANDSHAKE_TIMEOUT + 0.5, _handshake_failed, ctx, pod)
            return conn

        server = await loop.create_server(
            accepted, sock=listeners.sockets["hbone"], ssl=ctx.tls.server(cert), ssl_handshake_timeout=HANDSHAKE_TIMEOUT
        )
        if ctx.pods.get(pod.uid) is not pod or ctx.draining:
            server.close()
            return
        pod.servers.append(server)
        pod.hbone_ready = True
        pod.error = None

    def pod_removed(self, uid: str) -> None:
        ctx = self.ctx
        pod = ctx.pods.pop(uid, None)
        if pod is None:
            return
        for ip in pod.ips:
            if ctx.pods_by_ip.get(ip) is pod:
                del ctx.pods_by_ip[ip]
        for server in pod.servers:
            server.close()
        pod.servers.clear()
        self._track()

    def stop_accepting(self) -> None:
        """Drain: close every server (a newer ztunnel holding the same ports takes new connections)."""
        for pod in self.ctx.pods.values():
            for server in pod.servers:
                server.close()
            pod.servers.clear()

    def refresh_certificates(self) -> None:
        """Load renewed certificates into the server contexts that 15008 servers hold."""
        ctx = self.ctx
        for pod in ctx.pods.values():
            cert = ctx.identities.certs.get(pod.identity)
            if cert is not None:
                ctx.tls.server(cert)

    def _track(self) -> None:
        wanted = {p.identity for p in self.ctx.pods.values()}
        self.ctx.identities.track(wanted)
        self.ctx.tls.forget(wanted)


def _handshake_failed(ctx: ProxyContext, pod: ServedPod) -> None:
    ctx.count_error("inbound", "tls_handshake", f"a TLS handshake on {pod.namespace}/{pod.name}:15008 failed")
