"""Opening a CONNECT stream to an endpoint on another node: what the L4 and the HTTP outbound paths share.

The stream goes on a pooled HBONE connection from the source pod's netns, with the source pod's certificate,
to a server that must prove the destination workload's identity (the pool dials and checks). The stream is
usable once the destination answered 200; any other answer (401/403: its policy refused the connection,
503: its app is unreachable) is a `StreamRefused` carrying the status.

A stream the destination refused unprocessed (REFUSED_STREAM: it sent GOAWAY because it drains, e.g. during
a ztunnel upgrade, or the connection was full) is sent again ONCE: the pool then picks another connection or
dials a fresh one, which reaches the new ztunnel's listener. Nothing of the app's went upstream before the
200 (the relay starts after it), so the retry cannot duplicate the app's bytes; until the answer the stream
is held by a stand-in owner, so a refused try does not end the app's connection.
"""

from __future__ import annotations

import asyncio
import logging

from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.hbone import StreamRefusedError, StreamSide
from ztunnel.proxy.pool import NoCapacityError
from ztunnel.proxy.relay import Owner, Side
from ztunnel.state.mesh import Upstream

log = logging.getLogger(__name__)
RETRIES = 1
"""Tries after the first for a stream refused unprocessed (REFUSED_STREAM) or a fresh connection's GOAWAY."""
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
    key = (pod.identity, source_ip, up.ip, identity, up.workload.uid if up.workload is not None else "")
    for retries_left in range(RETRIES, -1, -1):
        try:
            conn = await ctx.pool.get(key, pod.netns_fd, ctx.tls.client(cert))
        except NoCapacityError:  # a fresh connection that said GOAWAY at once: a draining peer
            if not retries_left:
                raise
            continue
        held = _Held()
        side, response = conn.open(f"{up.ip}:{up.port}", held, [("forwarded", f"for={source_ip}")])
        try:
            async with asyncio.timeout(RESPONSE_TIMEOUT):
                status = await response
        except TimeoutError:
            side.abort()
            held.hand_to(side, owner)
            conn.retire()  # a peer that answers nothing in 10 s gets no further streams on this connection
            raise TimeoutError(f"no answer to the CONNECT from {up.ip} within {RESPONSE_TIMEOUT:g} s") from None
        except StreamRefusedError:
            if retries_left:
                log.info("CONNECT to %s:%d refused unprocessed; retrying on another connection", up.ip, up.port)
                continue  # the refused stream is over and told only `held`
            held.hand_to(side, owner)
            raise
        except BaseException:
            side.abort()
            held.hand_to(side, owner)
            raise
        held.hand_to(side, owner)
        if status != 200:
            side.abort()
            raise StreamRefused(status)
        return side
    raise AssertionError("unreachable: the last try returns or raises")


class _Held:
    """Owns a stream until its answer: what ended it is kept for the real owner, who gets it only when the
    stream is not tried again."""

    def __init__(self) -> None:
        self.lost: tuple[Side, BaseException | None] | None = None

    def side_lost(self, side: Side, error: BaseException | None) -> None:
        self.lost = (side, error)

    def hand_to(self, side: StreamSide, owner: Owner) -> None:
        side.owner = owner
        if self.lost is not None:
            owner.side_lost(*self.lost)
