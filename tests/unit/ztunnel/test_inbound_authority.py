"""The CONNECT authority's port is ASCII digits only: `int()` reads '٨٠٨٠' as 8080 and raises on '²'.

Twice checked: the HTTP/2 layer resets a stream whose CONNECT names such a port (the peer's mistake, on that
stream only), and inbound's `_serve`, which parses the port itself, answers 400 and counts `bad_authority`
rather than connecting anywhere.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from tests.unit.ztunnel.hbone.test_errors import CONNECT, RawClient, resets
from ztunnel.hbone import ErrorCode, RequestReceived, StreamReset
from ztunnel.identity.manager import IdentityManager
from ztunnel.proxy import inbound
from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.hbone import StreamSide
from ztunnel.proxy.relay import Tunnel

POD_IP = "10.0.0.2"
BAD_PORTS = [
    ("Arabic-Indic digits", "\u0668\u0660\u0668\u0660"),
    ("fullwidth digits", "\uff18\uff10\uff18\uff10"),
    ("superscript two", "\u00b2"),
    ("plus sign", "+80"),
    ("hex", "0x50"),
    ("underscore", "8_080"),
    ("zero", "0"),
    ("too large", "65536"),
]
IDS = [w for w, _ in BAD_PORTS]


@pytest.mark.parametrize(("what", "port"), BAD_PORTS, ids=IDS)
def test_a_connect_to_a_non_ascii_port_resets_only_its_stream(what: str, port: str) -> None:
    raw = RawClient()
    bad = raw.send(raw.headers(1, [(":method", "CONNECT"), (":authority", f"{POD_IP}:{port}")]))
    assert [(e.stream_id, e.error_code) for e in bad if isinstance(e, StreamReset)] == [(1, ErrorCode.PROTOCOL_ERROR)]
    assert not [e for e in bad if isinstance(e, RequestReceived)]
    assert resets(raw.sent()) == [(1, ErrorCode.PROTOCOL_ERROR)]
    assert raw.send(raw.headers(3, CONNECT)) == [RequestReceived(3, f"{POD_IP}:80", [])]


class _Stream:
    """The one thing `_serve` reads of the stream before it answers: its id."""

    stream_id = 1


@pytest.mark.parametrize(("what", "port"), BAD_PORTS, ids=IDS)
def test_inbound_answers_400_to_a_port_not_in_ascii_digits(
    monkeypatch: pytest.MonkeyPatch, what: str, port: str
) -> None:
    delivered: list[tuple[Any, ...]] = []

    async def deliver(*args: Any) -> None:
        delivered.append(args)
        raise OSError("no app in a unit test")

    monkeypatch.setattr(inbound, "deliver", deliver)
    # Nothing before the answer touches the identity manager or the pod's netns.
    ctx = ProxyContext("node1", "cluster.local", identities=cast(IdentityManager, None))
    pod = ServedPod("u1", "web-1", "mesh", "web", "spiffe://cluster.local/ns/mesh/sa/web", (POD_IP,), netns_fd=-1)
    conn = inbound.InboundHbone(ctx, pod)
    conn.peer_identity = "spiffe://cluster.local/ns/mesh/sa/client"
    answers: list[tuple[int, int]] = []
    monkeypatch.setattr(conn, "respond", lambda stream_id, status: answers.append((stream_id, status)))

    async def serve() -> None:
        side, tunnel = cast(StreamSide, _Stream()), cast(Tunnel, None)
        async with asyncio.timeout(5):
            await conn._serve(side, tunnel, f"{POD_IP}:{port}")

    asyncio.run(serve())
    assert answers == [(1, 400)]
    assert ctx.metrics.errors[("inbound", "bad_authority")] == 1
    assert delivered == []


def _serve_once(monkeypatch: pytest.MonkeyPatch, authority: str, config: bool) -> tuple[list[Any], ProxyContext]:
    """InboundHbone._serve for one CONNECT; returns (answers, ctx). Delivery to the app is refused."""
    delivered: list[tuple[Any, ...]] = []

    async def deliver(*args: Any) -> None:
        delivered.append(args)
        raise OSError("no app in a unit test")

    monkeypatch.setattr(inbound, "deliver", deliver)
    ctx = ProxyContext("node1", "cluster.local", identities=cast(IdentityManager, None))
    ctx.config_wait = 0.05
    if config:
        ctx.config_loaded.set()
    pod = ServedPod("u1", "web-1", "mesh", "web", "spiffe://cluster.local/ns/mesh/sa/web", (POD_IP,), netns_fd=-1)
    conn = inbound.InboundHbone(ctx, pod)
    conn.peer_identity = "spiffe://cluster.local/ns/mesh/sa/client"
    answers: list[Any] = []
    monkeypatch.setattr(conn, "respond", lambda stream_id, status: answers.append((stream_id, status)))

    async def serve() -> None:
        async with asyncio.timeout(5):
            await conn._serve(cast(StreamSide, _Stream()), cast(Tunnel, None), authority)

    asyncio.run(serve())
    return answers + [("delivered", len(delivered))], ctx


@pytest.mark.parametrize("port", [15000, 15001, 15006, 15008, 15020, 15021])
def test_a_connect_to_a_ztunnel_port_is_answered_400_and_never_delivered(
    monkeypatch: pytest.MonkeyPatch, port: int
) -> None:
    answers, ctx = _serve_once(monkeypatch, f"{POD_IP}:{port}", config=True)
    assert answers == [(1, 400), ("delivered", 0)]  # on 9ab7a9e: delivered to ztunnel's own listener
    assert ctx.metrics.errors[("inbound", "self_loop")] == 1


def test_a_connect_before_any_config_is_answered_503_and_never_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    answers, ctx = _serve_once(monkeypatch, f"{POD_IP}:8080", config=False)
    assert answers == [(1, 503), ("delivered", 0)]  # policies unknown: never authorized by default
    assert ctx.metrics.errors[("inbound", "no_config")] == 1
