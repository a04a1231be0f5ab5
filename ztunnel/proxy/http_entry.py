"""Handing one accepted connection (a TCP socket or an HBONE stream) to the HTTP proxy, and back if it is not HTTP/1.

The connection keeps its `Tunnel` for bookkeeping (the registry `/config_dump` lists, the access log line, the
TCP metrics when it has labels), while a `Channel` drives it: the channel owns the side, and passes its end on to
the tunnel, with the bytes the proxy wrote to the client (there is no upstream side whose count would say it).
If the session finds HTTP/2 with prior knowledge, or bytes that are not HTTP where that is allowed, the side is
given back with what was read, to be replayed to the L4 relay's upstream first.
"""

from __future__ import annotations

from ztunnel.l7.channel import Channel
from ztunnel.l7.exchange import Router
from ztunnel.l7.session import Session
from ztunnel.metrics import CONNECT, DENY, Labels, with_flags
from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.delivery import allowed, deliver, failed
from ztunnel.proxy.hbone import StreamSide
from ztunnel.proxy.relay import Side, TcpSide, Tunnel
from ztunnel.rbac import Connection


class OpenOnce:
    """Counts an inbound connection handled at L7 in istio_tcp_connections_opened_total once its fate is known: at
    its first request, when it is handed back to L4 (flagged DENY when the L4 decision refuses it, CONNECT when the
    app cannot be reached), or when it ends with neither. Counted at accept, a connection denied after a hand-back
    would show as a normal one, and a counter cannot be taken back."""

    __slots__ = ("ctx", "tunnel", "labels", "done")

    def __init__(self, ctx: ProxyContext, tunnel: Tunnel, labels: Labels) -> None:
        self.ctx = ctx
        self.tunnel = tunnel
        self.labels = labels
        self.done = False

    def __call__(self, flags: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        labels = self.labels if flags is None else with_flags(self.labels, flags)
        metrics, tunnel = self.ctx.metrics, self.tunnel
        metrics.opened[labels] += 1
        if tunnel.finished:  # it ended before it was counted: its close was not counted either
            metrics.closed[labels] += 1
        else:
            tunnel.labels = (labels,)


class _Ends:
    """The channel's end-of-side callback: the tunnel's bookkeeping, with the bytes the proxy sent."""

    __slots__ = ("tunnel", "channel")

    def __init__(self, tunnel: Tunnel, channel: Channel) -> None:
        self.tunnel = tunnel
        self.channel = channel

    def __call__(self, side: Side, error: BaseException | None) -> None:
        tunnel, channel = self.tunnel, self.channel
        self.channel = None  # type: ignore[assignment]  # no cycle left once the connection ended
        tunnel.sent_override = channel.sent
        tunnel.side_lost(side, error)


async def serve_http(ctx: ProxyContext, side: Side, tunnel: Tunnel, router: Router, sniff: bool) -> list[bytes] | None:
    """Serve `side` request by request through `router`; returns the bytes read when the connection is handed
    back for the L4 relay (the side is then owned by `tunnel` again, reading paused), else None."""
    channel = Channel()
    channel.on_lost = _Ends(tunnel, channel)
    side.owner = channel  # type: ignore[attr-defined]
    tunnel.describe += " http"
    channel.attach(side)
    try:
        handback = await Session(channel, router, ctx.http_limits, sniff).run()
    finally:
        close = getattr(router, "close", None)
        if close is not None:
            close()
    if handback is None:
        return None
    rest = channel.detach()
    channel.on_lost = None
    side.owner = tunnel  # type: ignore[attr-defined]
    tunnel.describe = tunnel.describe.removesuffix(" http")
    return handback + rest


async def relay_handed_back(
    ctx: ProxyContext,
    pod: ServedPod,
    side: TcpSide | StreamSide,
    tunnel: Tunnel,
    conn: Connection,
    data: list[bytes],
    direction: str,
    opened: OpenOnce,
) -> None:
    """An inbound connection the HTTP proxy handed back (not HTTP/1): relayed at L4, what was read replayed first, if
    the L4 decision (where HTTP rules fail closed) allows it; reset otherwise. Counted as opened here (`opened`)."""
    if not allowed(ctx, ctx.index, pod, conn, direction):
        ctx.metrics.errors[(direction, "denied")] += 1
        opened(DENY)
        tunnel.failure = "denied"
        tunnel.fail()
        return
    try:
        upstream = await deliver(ctx, pod, conn.source_ip, conn.dest_ip, conn.dest_port, tunnel)
    except (OSError, TimeoutError) as exc:
        opened(CONNECT)
        failed(ctx, tunnel, direction, "app_unreachable", f"{pod.namespace}/{pod.name}:{conn.dest_port}: {exc}")
        return
    opened()
    side.replay(data)
    tunnel.established(upstream)
