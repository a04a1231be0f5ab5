"""The last hop to an app this node serves: authorize the connection, then connect to the app.

Both paths into a served pod end here: inbound (HBONE on 15008, plaintext on 15006) and outbound to an
enrolled pod of this very node (no TLS needed, policy never skipped), so outbound does not depend on
inbound. The app is reached from inside the pod's netns with the caller's IP as source (IP_TRANSPARENT),
so the app and its logs see who called.
A connection that fails once routed is still counted in istio_tcp_* (`refused`), flagged DENY or CONNECT as
Istio's ztunnel does, and `failed` notes why for the access log.
"""

from __future__ import annotations

import asyncio
import logging

from ztunnel.metrics import Labels
from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.relay import Owner, TcpSide, Tunnel
from ztunnel.rbac import Connection, authorize, unknown_workload
from ztunnel.state.mesh import MeshIndex

log = logging.getLogger(__name__)


def allowed(ctx: ProxyContext, index: MeshIndex, pod: ServedPod, conn: Connection, direction: str) -> bool:
    """Authorize `conn` to `pod` with the index the caller holds; counts and logs the decision."""
    workload = index.workloads.get(pod.uid)
    policies = index.policies.authorization
    decision = unknown_workload(workload is not None, policies, pod.namespace, index.root_namespaces) or authorize(
        policies, pod.namespace, workload.labels if workload is not None else {}, conn, index.root_namespaces
    )
    ctx.metrics.decisions[(direction, "allow" if decision.allowed else "deny")] += 1
    if not decision.allowed:
        log.info("denied %s -> %s/%s:%d: %s", conn.source_identity or conn.source_ip, pod.namespace, pod.name,
                 conn.dest_port, decision.reason)  # fmt: skip
    return decision.allowed


async def deliver(ctx: ProxyContext, pod: ServedPod, source_ip: str, ip: str, port: int, owner: Owner) -> TcpSide:
    """Connect to the app in `pod` from `source_ip` (spoofed with IP_TRANSPARENT) and return that side, whose end
    is reported to `owner` (the tunnel, or the HTTP proxy's channel)."""
    sock = await ctx.sockets.connect(pod.netns_fd, ip, port, source_ip)
    loop = asyncio.get_running_loop()
    _, side = await loop.create_connection(lambda: TcpSide(owner), sock=sock)
    return side


def refused(ctx: ProxyContext, tunnel: Tunnel, reason: str, *labels: Labels) -> None:
    """A connection that failed once routed (denied, upstream unreachable): counted in istio_tcp_* as opened, and
    closed when it ends, with `labels` (flags DENY or CONNECT), as Istio's ztunnel counts them; `reason` is
    what the access log says. The caller still counts the error and ends the connection."""
    tunnel.failure = reason
    tunnel.labels = labels
    for label_set in labels:
        ctx.metrics.opened[label_set] += 1


def failed(ctx: ProxyContext, tunnel: Tunnel, direction: str, reason: str, detail: object) -> None:
    """Count and log a failed connection, note why for the access log, and reset it."""
    ctx.count_error(direction, reason, detail)
    tunnel.failure = reason
    tunnel.fail()
