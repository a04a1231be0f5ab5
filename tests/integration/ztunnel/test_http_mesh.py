"""HTTP through the real node proxies on loopback: the destination decides each request of a connection when a
policy has HTTP rules for the port, and hands a connection that is not HTTP/1 back to the L4 relay.

The source ztunnel's 15001 captures the client app's connection to the server pod's address (a pod IP, not a
Service: L4 at the source), carries it over HBONE, and the destination's ztunnel (`InboundHbone`) parses it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.ztunnel.conftest import StartApp
from tests.integration.ztunnel.loopback import CLIENT_ID, App
from tests.integration.ztunnel.served import POD, ServedNode, mesh
from tests.integration.ztunnel.test_hbone_io import echo, exchange
from ztunnel.metrics import REQUEST_LABELS

pytestmark = pytest.mark.asyncio
PRINCIPAL = CLIENT_ID.removeprefix("spiffe://")


def policy(name: str, action: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": POD.namespace},
        "spec": {"action": action, "rules": rules},
    }


async def http_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP/1.1 server answering each GET with its path (requests without bodies only)."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # the client closed its connection
        path = head.split(b" ", 2)[1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(path), path))
        await writer.drain()


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: server\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return status, await reader.readexactly(length)


async def test_each_request_is_decided_on_one_connection(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    app: App = await apps(http_app)
    destination.ctx.index = mesh(policies=[policy("paths", "ALLOW", [{"to": [{"operation": {"paths": ["/ok*"]}}]}])])
    async with source.captured(app.authority) as (reader, writer):
        answers = [await get(reader, writer, path) for path in ("/ok", "/no", "/ok/2", "/no%2F..", "/ok/3")]
    assert answers == [(200, b"/ok"), (403, b"RBAC: access denied"), (200, b"/ok/2"),
                       (403, b"RBAC: access denied"), (200, b"/ok/3")]  # fmt: skip
    assert app.accepted == 1, "the allowed requests share one app connection"
    named = [dict(zip(REQUEST_LABELS, labels, strict=True)) for labels in destination.metrics.requests]
    codes = {(x["response_code"], x["response_flags"]): destination.metrics.requests[tuple(x.values())] for x in named}
    assert codes == {("200", "-"): 3, ("403", "DENY"): 2}


async def test_bytes_that_are_not_http_go_through_at_l4_under_the_l4_decision(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    app: App = await apps(echo)
    # HTTP rules for every port (so the port is L7), and an L4 rule that lets the client in at L4.
    rules = [
        {"from": [{"source": {"principals": [PRINCIPAL]}}], "to": [{"operation": {"paths": ["/x*"]}}]},
        {"from": [{"source": {"principals": [PRINCIPAL]}}], "to": [{"operation": {"ports": [str(app.port)]}}]},
    ]
    destination.ctx.index = mesh(policies=[policy("mixed", "ALLOW", rules)])
    for payload in (
        b"\x16\x03\x01 not http at all\r\n\r\n" * 100,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 5000,
    ):
        async with source.captured(app.authority) as (reader, writer):
            assert await asyncio.wait_for(exchange(reader, writer, payload), 10) == payload
    assert destination.metrics.requests == {}


async def test_not_http_is_reset_when_the_l4_decision_denies(
    source: ServedNode, destination: ServedNode, apps: StartApp
) -> None:
    app: App = await apps(echo)
    # A DENY with HTTP fields: at L4 its HTTP fields are ignored, so it denies every connection that is not HTTP.
    destination.ctx.index = mesh(
        policies=[policy("no-admin", "DENY", [{"to": [{"operation": {"paths": ["/admin*"]}}]}])]
    )
    async with source.captured(app.authority) as (reader, writer):
        writer.write(b"\x16\x03\x01 not http\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 10)
    assert app.accepted == 0
