"""The last hop to an app this node serves: authorize the connection, then connect to the app.

Both paths into a served pod end here: inbound (HBONE on 15008, plaintext on 15006) and outbound to an
enrolled pod of this very node (no TLS needed, policy never skipped), so outbound does not depend on
inbound. The app is reached from inside the pod's netns with the caller's IP as source (IP_TRANSPARENT),
so the app and its logs see who called.
"""

from __future__ import annotations

import asyncio
import logging

from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.relay import TcpSide, Tunnel
from ztunnel.rbac import Connection, authorize
from ztunnel.state.mesh import MeshIndex

log = logging.getLogger(__name__)


def allowed(ctx: ProxyContext, index: MeshIndex, pod: ServedPod, conn: Connection, direction: str) -> bool:
    """Authorize `conn` to `pod` with the index the caller holds; counts and logs the decision."""
    workload = index.workloads.get(pod.uid)
    labels = workload.labels if workload is not None else {}
    decision = authorize(index.policies.authorization, pod.namespace, labels, conn, ctx.root_namespace)
    ctx.metrics.decisions[(direction, "allow" if decision.allowed else "deny")] += 1
    if not decision.allowed:
        log.info("denied %s -> %s/%s:%d: %s", conn.source_identity or conn.source_ip, pod.namespace, pod.name,
                 conn.dest_port, decision.reason)  # fmt: skip
    return decision.allowed


async def deliver(ctx: ProxyContext, pod: ServedPod, source_ip: str, ip: str, port: int, tunnel: Tunnel) -> TcpSide:
    """Connect to the app in `pod` from `source_ip` (spoofed with IP_TRANSPARENT) and return that side."""
    sock = await ctx.sockets.connect(pod.netns_fd, ip, port, source_ip)
    loop = asyncio.get_running_loop()
    _, side = await loop.create_connection(lambda: TcpSide(tunnel), sock=sock)
    return side
