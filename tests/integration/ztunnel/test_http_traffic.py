"""A TrafficPolicy's connection pool on an HTTP Service, through the real source node proxy on loopback: with
`maxConnections: 1` and `http1MaxPendingRequests: 1`, of concurrent requests one is served, one waits for the
slot and is served after it, and the rest are answered 503 with flag UO, counted; every slot is given back,
also when a new policy version changed the limits while they were held.

The Service `legacy/web` (VIP 10.96.0.30, port 80 named `http`, to the pods' 5000) has one endpoint outside the
mesh, an app on loopback that answers each request after a delay the test holds it for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from control.model.kube import Namespace, Service, ServicePort
from control.model.mesh import MeshSettings, service_item, workload_item
from control.model.traffic import TrafficPolicy
from tests.integration.ztunnel.conftest import StartApp
from tests.integration.ztunnel.loopback import LOOPBACK, wait_until
from tests.integration.ztunnel.served import AMBIENT, CLIENT_POD, ServedNode
from tests.integration.ztunnel.test_tcp_traffic import _pod
from ztunnel.config.state import ConfigState, apply
from ztunnel.state.mesh import MeshIndex

pytestmark = pytest.mark.asyncio
VIP, PORT, TARGET, ENDPOINT = "10.96.0.30", 80, 5000, "10.0.4.1"
WEB = f"{VIP}:{PORT}"


def index(version: int, **pool: Any) -> MeshIndex:
    client = _pod(CLIENT_POD.name, CLIENT_POD.namespace, CLIENT_POD.ips[0], CLIENT_POD.service_account)
    web = _pod("web-0", "legacy", ENDPOINT, "web")
    namespaces = {"a": Namespace("a", AMBIENT), "legacy": Namespace("legacy", ())}
    service = Service("web", "legacy", (VIP,), (ServicePort("http", PORT, TARGET, "TCP"),), (("app", "web"),))
    meta = {"name": "web", "namespace": "legacy"}
    policy = {"apiVersion": "networking.meshlet.io/v1", "kind": "TrafficPolicy", "metadata": meta,
              "spec": {"targetRef": {"name": "web"}, "connectionPool": pool}}  # fmt: skip
    resources: dict[str, list[Any]] = {
        "workloads": [workload_item(p, namespaces[p.namespace], MeshSettings()) for p in (client, web)],
        "services": [service_item(service, [web], MeshSettings())],
        "traffic_policies": [TrafficPolicy.from_k8s(policy).to_wire()],
    }
    message = {"type": "snapshot", "epoch": "e", "version": version, "resources": resources}
    return MeshIndex.from_config(apply(ConfigState(), message))


class HeldApp:
    """Answers each request once the test lets it (`release`), so requests stay in flight meanwhile."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.received = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            self.received += 1
            await self.gate.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()


async def get(node: ServedNode) -> tuple[int, bytes]:
    async with node.sockets.captured(node.outbound_port, WEB, node.info.ips[0]) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return int(head.split(b" ")[1]), await reader.readexactly(length)


def overflows(node: ServedNode) -> int:
    return node.metrics.traffic.get(("overflows", "legacy", "web", "pending"), 0)


async def test_one_served_one_pending_the_rest_overflow_and_the_slot_comes_back(
    node: ServedNode, apps: StartApp
) -> None:
    held = HeldApp()
    app = await apps(held)
    node.sockets.addresses[(ENDPOINT, TARGET)] = (LOOPBACK, app.port)
    node.ctx.index = index(1, tcp={"maxConnections": 1}, http={"http1MaxPendingRequests": 1})
    calls = [asyncio.ensure_future(get(node)) for _ in range(4)]
    await wait_until(lambda: held.received == 1 and overflows(node) == 2, "one in flight, one pending, two refused")
    # A new policy version while the slot is held and a request waits: both still end as they should.
    node.ctx.index = index(2, tcp={"maxConnections": 1}, http={"http1MaxPendingRequests": 1, "maxRetries": 3})
    held.gate.set()
    answers = sorted(await asyncio.gather(*calls))
    assert answers == [(200, b"ok"), (200, b"ok"), (503, b"upstream connect error or disconnect/reset before "
                       b"headers. reset reason: overflow"), (503, b"upstream connect error or disconnect/reset "
                       b"before headers. reset reason: overflow")]  # fmt: skip
    # Every slot came back: the next requests are served one after another, none refused.
    assert [await get(node) for _ in range(3)] == [(200, b"ok")] * 3
    assert overflows(node) == 2
    [cluster] = node.ctx.clusters.all()
    assert cluster.limits is not None and (cluster.limits.connections, cluster.limits.pending) == (0, 0)
