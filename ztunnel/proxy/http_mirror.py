"""HTTPRoute RequestMirror: a copy of a request sent to another Service, its answer read and dropped.

As Envoy mirrors (what Istio users know): fire and forget, the client's answer never waits for the copy nor sees
it; the copy's `Host` gets `-shadow` (before any port), so the mirror can tell copies apart. The copy takes its
own endpoint of the mirror Service and the same ways as any request (HBONE, local with that pod's policy, kept-
alive upstream connections), from the source pod's identity.

Best effort, bounded: at most MAX_IN_FLIGHT copies on their way per proxy (more are dropped), each within
COPY_TIMEOUT. Requests with a body (or an upgrade) are not copied: the body streams once, to the primary. Each
copy is counted in `meshlet_mirrored_requests_total{kind}`: sent (answered), failed, dropped, skipped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ztunnel.l7.channel import Channel, ChannelClosed
from ztunnel.l7.clusters import Cluster
from ztunnel.l7.exchange import Exchange, UpstreamFailed
from ztunnel.l7.heads import request_head
from ztunnel.l7.messages import BadMessage, Head, ResponseParser
from ztunnel.proxy.context import ProxyContext, peer_of
from ztunnel.proxy.http_common import Call
from ztunnel.proxy.route import Local, Passthrough
from ztunnel.state.mesh import Service

if TYPE_CHECKING:
    from ztunnel.proxy.http_outbound import OutboundHttp

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 64
COPY_TIMEOUT = 10.0


def mirror(
    ctx: ProxyContext, router: OutboundHttp, exchange: Exchange, mirrors: tuple[tuple[Cluster, Service], ...]
) -> None:
    """Send a copy of `exchange`'s request (as forwarded: after the route's filters) to each mirror."""
    head = exchange.head
    for cluster, service in mirrors:
        if head.has_body or head.upgrade:
            cluster.count("mirrors", "skipped")
            continue
        if ctx.mirrors_in_flight >= MAX_IN_FLIGHT:
            cluster.count("mirrors", "dropped")
            continue
        ctx.mirrors_in_flight += 1
        ctx.spawn(_copy(ctx, router, exchange, cluster, service), f"mirror to {cluster.service}")


def shadow_head(exchange: Exchange) -> bytes:
    """The copy's request head: the request as forwarded, with `-shadow` added to its host."""
    head = exchange.head
    headers = [(n, _shadow_host(v)) if n.lower() == b"host" else (n, v) for n, v in head.headers]
    copy = Head(head.version, headers, method=head.method, target=head.target)
    return request_head(Exchange(copy, extra=list(exchange.extra), drop=exchange.drop))


def _shadow_host(host: bytes) -> bytes:
    """`echo:80` -> `echo-shadow:80`, `echo` -> `echo-shadow`, `[::1]:80` -> `[::1]-shadow:80` (an IPv6
    literal's colons are not a port)."""
    name, colon, port = host.rpartition(b":")
    bracketed = name.startswith(b"[") and name.endswith(b"]")
    if colon and port.isdigit() and (bracketed or b":" not in name):
        return name + b"-shadow:" + port
    return host + b"-shadow"


async def _copy(
    ctx: ProxyContext, router: OutboundHttp, exchange: Exchange, cluster: Cluster, service: Service
) -> None:
    data = shadow_head(exchange)
    method = exchange.head.method
    primary = exchange.target
    assert isinstance(primary, Call)
    call = Call(primary.trace, primary.request_id, primary.source, service=(service.namespace, service.name))
    upstream = None
    reusable = False
    try:
        decision = router.pick(cluster, service, None, [])
        call.route = decision
        up = decision.upstream
        principal = decision.identity if isinstance(decision, Local) else None
        call.destination = peer_of(up.workload, principal, ctx.metrics.cluster)
        call.mutual_tls = not isinstance(decision, Passthrough)
        if isinstance(decision, Local):
            copy = Exchange(Head(exchange.head.version, list(exchange.head.headers), method=method,
                                 target=exchange.head.target))  # fmt: skip
            if router.authorize_local(copy, call, decision) is not None:
                cluster.count("mirrors", "failed")
                return
        async with asyncio.timeout(COPY_TIMEOUT):
            upstream = await router.open(decision, call, False)
            upstream.parser.expect(method)
            upstream.channel.send(data)
            reusable = await _drain_response(upstream.channel, upstream.parser)
        cluster.count("mirrors", "sent")
    except (UpstreamFailed, TimeoutError, ChannelClosed, BadMessage, OSError) as exc:
        cluster.count("mirrors", "failed")
        log.debug("mirrored request to %s failed: %s", cluster.service, exc)
    except Exception:  # a bug in a copy must never reach the primary request or the proxy
        cluster.count("mirrors", "failed")
        log.exception("mirrored request to %s failed", cluster.service)
    finally:
        ctx.mirrors_in_flight -= 1
        if upstream is not None:
            router.release(upstream, reusable)


async def _drain_response(channel: Channel, parser: ResponseParser) -> bool:
    """Read the copy's response to its end; returns whether the connection may carry another request."""
    final: Head | None = None
    while True:
        data = await channel.read()
        if not data:
            return False
        for kind, value in parser.feed(data):
            if kind == "head" and isinstance(value, Head) and value.status >= 200:
                final = value
            elif kind == "end" and final is not None:
                return final.keep_alive
