"""Plaintext into a pod (its 15006, `InboundPlaintext`) on a port that is L7 only because an AuthorizationPolicy
has HTTP rules for it: HTTP/1 is decided request by request, and bytes that are not HTTP/1 are handed back by the
HTTP session and relayed at L4 under the L4 decision, where HTTP rules fail closed.

Only the destination node runs: the clients are outside the mesh (no identity, so the policies here name them by
`ipBlocks`), and no PeerAuthentication is set, so the pod's mode is PERMISSIVE and plaintext is let in. The HBONE
variant of these tests is `test_http_mesh.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest

from tests.integration.ztunnel.conftest import StartApp
from tests.integration.ztunnel.loopback import App, LoopbackSockets, wait_until
from tests.integration.ztunnel.served import POD, ServedNode, mesh
from tests.integration.ztunnel.test_hbone_io import echo, exchange
from tests.integration.ztunnel.test_http_mesh import get, http_app, policy
from ztunnel.metrics import REQUEST_LABELS, TCP_LABELS

pytestmark = pytest.mark.asyncio
L4_CLIENT = "127.0.0.4"
"""A client outside the mesh that an L4 rule lets in."""
HTTP_CLIENT = "127.0.0.3"
"""A client outside the mesh that only HTTP rules name."""
NOT_HTTP = (
    b"\x16\x03\x01 not http at all\r\n\r\n" * 100,  # looks like a TLS ClientHello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 5000,  # HTTP/2 with prior knowledge
)


class PlaintextSockets(LoopbackSockets):
    """`LoopbackSockets` whose 15006 finds a connection's original destination in the table `captured` fills, by
    the client's address (as the eBPF map keys it), rather than in the listener's own address."""

    def inbound_destination(self, sock: socket.socket) -> tuple[str, int]:
        return self.outbound_destination(sock, sock.getpeername())


@pytest.fixture
def sockets() -> LoopbackSockets:
    return PlaintextSockets()


def plaintext(
    node: ServedNode, app: App, source_ip: str
) -> contextlib.AbstractAsyncContextManager[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection from `source_ip` (outside the mesh) to the app's port of `node`'s pod, as its 15006 takes it."""
    return node.sockets.captured(node.plaintext_port, f"{POD.ips[0]}:{app.port}", source_ip)


def connections(node: ServedNode) -> tuple[int, int]:
    """istio_tcp_connections_opened_total and _closed_total, summed over label sets."""
    return sum(node.metrics.opened.values()), sum(node.metrics.closed.values())


def request_codes(node: ServedNode) -> dict[tuple[str, str], int]:
    """istio_requests_total by (response_code, response_flags)."""
    named = [dict(zip(REQUEST_LABELS, labels, strict=True)) for labels in node.metrics.requests]
    return {(x["response_code"], x["response_flags"]): node.metrics.requests[tuple(x.values())] for x in named}


def flagged(node: ServedNode) -> dict[str, int]:
    """istio_tcp_connections_opened_total by response_flags."""
    out: dict[str, int] = {}
    for labels, value in node.metrics.opened.items():
        flags = dict(zip(TCP_LABELS, labels, strict=True))["response_flags"]
        out[flags] = out.get(flags, 0) + value
    return out


async def all_closed(node: ServedNode, count: int) -> None:
    await wait_until(lambda: connections(node) == (count, count), f"{count} connections counted opened and closed")


def ip_block(ip: str) -> dict[str, Any]:
    return {"source": {"ipBlocks": [f"{ip}/32"]}}


async def test_not_http_goes_through_at_l4_when_an_l4_rule_allows_it(destination: ServedNode, apps: StartApp) -> None:
    app = await apps(echo)
    # HTTP rules for every port (so the port is L7), and an L4 rule that lets one client in at L4.
    rules = [
        {"from": [ip_block(HTTP_CLIENT)], "to": [{"operation": {"paths": ["/x*"]}}]},
        {"from": [ip_block(L4_CLIENT)], "to": [{"operation": {"ports": [str(app.port)]}}]},
    ]
    destination.ctx.index = mesh(policies=[policy("mixed", "ALLOW", rules)])
    for payload in NOT_HTTP:
        async with plaintext(destination, app, L4_CLIENT) as (reader, writer):
            assert await asyncio.wait_for(exchange(reader, writer, payload), 10) == payload
    assert app.accepted == len(NOT_HTTP)
    await all_closed(destination, len(NOT_HTTP))  # once each: handed back to L4 is the same connection
    assert flagged(destination) == {"-": len(NOT_HTTP)}
    assert destination.metrics.requests == {}


async def test_http_on_the_same_port_is_decided_per_request(destination: ServedNode, apps: StartApp) -> None:
    app = await apps(http_app)
    rules = [
        {"from": [ip_block(HTTP_CLIENT)], "to": [{"operation": {"paths": ["/x*"]}}]},
        {"from": [ip_block(L4_CLIENT)], "to": [{"operation": {"ports": [str(app.port)]}}]},
    ]
    destination.ctx.index = mesh(policies=[policy("mixed", "ALLOW", rules)])
    async with plaintext(destination, app, HTTP_CLIENT) as (reader, writer):
        answers = [await get(reader, writer, path) for path in ("/x", "/y", "/x/2")]
    assert answers == [(200, b"/x"), (403, b"RBAC: access denied"), (200, b"/x/2")]
    async with plaintext(destination, app, L4_CLIENT) as (reader, writer):
        assert await get(reader, writer, "/y") == (200, b"/y")  # its L4 rule matches every request on the port
    assert app.accepted == 2, "one app connection per client connection"
    assert request_codes(destination) == {("200", "-"): 3, ("403", "DENY"): 1}
    await all_closed(destination, 2)


@pytest.mark.parametrize(
    ("action", "paths", "allowed", "denied"),
    [
        # A DENY with HTTP fields: at L4 its HTTP fields are ignored, so it denies every connection that is not HTTP.
        ("DENY", "/admin*", "/ok", "/admin"),
        # An ALLOW with HTTP fields only: no rule allows a connection that is not HTTP.
        ("ALLOW", "/ok*", "/ok", "/admin"),
    ],
)
async def test_not_http_is_reset_when_the_l4_decision_denies(
    destination: ServedNode, apps: StartApp, action: str, paths: str, allowed: str, denied: str
) -> None:
    app = await apps(http_app)
    destination.ctx.index = mesh(policies=[policy("paths", action, [{"to": [{"operation": {"paths": [paths]}}]}])])
    for payload in NOT_HTTP:
        async with plaintext(destination, app, HTTP_CLIENT) as (reader, writer):
            writer.write(payload)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 10)
    assert app.accepted == 0
    await all_closed(destination, len(NOT_HTTP))
    # Counted once its fate was known: as a denied connection, as the L4 path counts one.
    assert flagged(destination) == {"DENY": len(NOT_HTTP)}
    assert destination.errors("denied", "inbound_plaintext") == len(NOT_HTTP)
    assert destination.metrics.requests == {}
    # HTTP on the same port, from the same client: each request is decided on its own.
    async with plaintext(destination, app, HTTP_CLIENT) as (reader, writer):
        answers = [await get(reader, writer, path) for path in (allowed, denied, allowed)]
    assert answers == [(200, allowed.encode()), (403, b"RBAC: access denied"), (200, allowed.encode())]
    assert app.accepted == 1
    assert request_codes(destination) == {("200", "-"): 2, ("403", "DENY"): 1}
