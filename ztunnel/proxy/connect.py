"""Opening a CONNECT stream to an endpoint on another node: what the L4 and the HTTP outbound paths share.

The stream goes on a pooled HBONE connection from the source pod's netns, with the source pod's certificate,
to a server that must prove the destination workload's identity (the pool dials and checks). The stream is
usable once the destination answered 200; any other answer (401/403: its policy refused the connection,
503: its app is unreachable or it is draining) is a `StreamRefused` carrying the status.
"""

from __future__ import annotations

import asyncio

from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.hbone import StreamSide
from ztunnel.proxy.relay import Owner
from ztunnel.state.mesh import Upstream

RESPONSE_TIMEOUT = 10.0
"""Seconds for the destination's answer to a CONNECT (it connects to its app before answering)."""


class StreamRefused(Exception):
    """The destination answered the CONNECT with `status`, not 200; `reason` is the metric's label."""

    def __init__(self, status: int) -> None:
        super().__init__(f"CONNECT answered {status}")
        self.status = status
        self.reason = "denied" if status in (401, 403) else f"hbone_{status}"


async def open_stream(
    ctx: ProxyContext, pod: ServedPod, source_ip: str, up: Upstream, identity: str, owner: Owner
) -> StreamSide:
    """A CONNECT stream from `pod` (at `source_ip`) to `up`, whose server proved `identity`, answered 200; its
    end is reported to `owner`. Raises StreamRefused, or what dialing raised (OSError, TimeoutError, ...)."""
    cert = await ctx.identities.certificate(pod.identity)
    assert ctx.pool is not None
    conn = await ctx.pool.get((pod.identity, source_ip, up.ip, identity), pod.netns_fd, ctx.tls.client(cert))
    side, response = conn.open(f"{up.ip}:{up.port}", owner, [("forwarded", f"for={source_ip}")])
    try:
        async with asyncio.timeout(RESPONSE_TIMEOUT):
            status = await response
    except BaseException:
        side.abort()
        raise
    if status != 200:
        side.abort()
        raise StreamRefused(status)
    return side
