"""A TrafficPolicy on a TCP Service, through the real source node proxy on loopback: per connection, the
policy's load balancer picks the endpoint (LEAST_REQUEST counts open connections, a consistent hash on the
source IP keeps a client on one endpoint), `tcp.maxConnections` resets a connection over it (flag UO, counted),
and outlier detection ejects an endpoint that refuses connections.

The Service `legacy/db` (VIP 10.96.0.20, port 5432 to the pods' 5000) has endpoints outside the mesh, so the
client pod's connections to it leave its node in plaintext; the loopback socket factory sends each endpoint's
address to an app on 127.0.0.1 that greets with the endpoint's name, then waits for the client to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest

from control.model.kube import Namespace, Pod, Service, ServicePort
from control.model.mesh import MeshSettings, service_item, workload_item
from control.model.traffic import TrafficPolicy
from tests.integration.ztunnel.conftest import StartApp
from tests.integration.ztunnel.loopback import LOOPBACK, wait_until
from tests.integration.ztunnel.served import AMBIENT, CLIENT_POD, ServedNode
from ztunnel.config.state import ConfigState, apply
from ztunnel.metrics import TCP_LABELS
from ztunnel.state.mesh import MeshIndex

pytestmark = pytest.mark.asyncio
VIP, PORT, TARGET = "10.96.0.20", 5432, 5000
DB = f"{VIP}:{PORT}"
ENDPOINTS = ("10.0.3.1", "10.0.3.2", "10.0.3.3")
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _pod(name: str, namespace: str, ip: str, service_account: str) -> Pod:
    return Pod(
        uid=f"uid-{name}",
        name=name,
        namespace=namespace,
        node=f"node-{name}",
        service_account=service_account,
        ips=(ip,),
        labels=(("app", service_account),),
        host_network=False,
        phase="Running",
        ready=True,
        container_ports=(),
    )


def index(endpoints: int, **spec: Any) -> MeshIndex:
    """The client pod (enrolled), `endpoints` pods behind `legacy/db` (outside the mesh), and a TrafficPolicy on
    the Service with `spec` (none when empty)."""
    client = _pod(CLIENT_POD.name, CLIENT_POD.namespace, CLIENT_POD.ips[0], CLIENT_POD.service_account)
    db = [_pod(f"db-{i}", "legacy", ip, "db") for i, ip in enumerate(ENDPOINTS[:endpoints])]
    namespaces = {"a": Namespace("a", AMBIENT), "legacy": Namespace("legacy", ())}
    service = Service("db", "legacy", (VIP,), (ServicePort("tcp-db", PORT, TARGET, "TCP"),), (("app", "db"),))
    resources: dict[str, list[Any]] = {
        "workloads": [workload_item(p, namespaces[p.namespace], MeshSettings()) for p in (client, *db)],
        "services": [service_item(service, db, MeshSettings())],
    }
    if spec:
        meta = {"name": "db", "namespace": "legacy"}
        policy = {"apiVersion": "networking.meshlet.io/v1", "kind": "TrafficPolicy", "metadata": meta}
        resources["traffic_policies"] = [
            TrafficPolicy.from_k8s({**policy, "spec": {"targetRef": {"name": "db"}, **spec}}).to_wire()
        ]
    return MeshIndex.from_config(apply(ConfigState(), {"type": "snapshot", "epoch": "e", "version": 1,
                                                       "resources": resources}))  # fmt: skip


async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Says which endpoint answered (the address the proxy dialed, from the loopback map), then waits for EOF."""
    writer.write(b"hello\n")
    await writer.drain()
    await reader.read()


async def endpoints(node: ServedNode, apps: StartApp, count: int) -> dict[int, str]:
    """`count` greeting apps, one per endpoint address: app port -> endpoint IP."""
    by_port = {}
    for ip in ENDPOINTS[:count]:
        app = await apps(greeter)
        node.sockets.addresses[(ip, TARGET)] = (LOOPBACK, app.port)
        by_port[app.port] = ip
    return by_port


class Client:
    """Connections of the client pod to the Service, kept open until closed; which endpoint took each one is
    read from the proxy's own upstream socket (the app port it reached)."""

    def __init__(self, node: ServedNode, by_port: dict[int, str]) -> None:
        self.node = node
        self.by_port = by_port
        self.open: dict[int, tuple[str, contextlib.AsyncExitStack]] = {}
        self._ids = 0

    async def connect(self, source_ip: str | None = None) -> tuple[int, str | None]:
        """(id, the endpoint that greeted) of a new connection, kept open; the endpoint is None when the proxy
        reset the connection instead (then nothing is kept)."""
        stack = contextlib.AsyncExitStack()
        ip = source_ip or self.node.info.ips[0]
        reader, _ = await stack.enter_async_context(self.node.sockets.captured(self.node.outbound_port, DB, ip))
        try:
            greeting = await asyncio.wait_for(reader.readline(), 10)
        except ConnectionResetError:
            greeting = b""
        if greeting != b"hello\n":
            await stack.aclose()
            return 0, None
        self._ids += 1
        endpoint = self._endpoint_of_newest()
        self.open[self._ids] = (endpoint, stack)
        return self._ids, endpoint

    def _endpoint_of_newest(self) -> str:
        # The tunnel just established is the one with the highest id; its upstream socket's peer is the app.
        tunnel = max((t for t in self.node.ctx.tunnels if t.upstream is not None), key=lambda t: t.id)
        transport = tunnel.upstream.transport  # type: ignore[union-attr]
        return self.by_port[transport.get_extra_info("peername")[1]]

    async def close(self, *ids: int) -> None:
        for i in ids:
            await self.open.pop(i)[1].aclose()
        await wait_until(lambda: len(self.node.ctx.tunnels) == len(self.open), "closed connections' tunnels to end")

    async def close_all(self) -> None:
        await self.close(*list(self.open))


def opened_with_flags(node: ServedNode, flags: str) -> int:
    """istio_tcp_connections_opened_total with response_flags `flags`."""
    at = TCP_LABELS.index("response_flags")
    return sum(n for labels, n in node.metrics.opened.items() if labels[at] == flags)


async def test_without_a_policy_connections_go_round_robin_and_no_cluster_is_kept(
    node: ServedNode, apps: StartApp
) -> None:
    client = Client(node, await endpoints(node, apps, 2))
    node.ctx.index = index(2)
    picked = []
    for _ in range(6):
        i, endpoint = await client.connect()
        picked.append(endpoint)
        await client.close(i)
    assert picked[0] != picked[1] and picked == picked[:2] * 3
    assert node.ctx.clusters.all() == []


async def test_least_request_sends_new_connections_away_from_the_endpoint_holding_open_ones(
    node: ServedNode, apps: StartApp
) -> None:
    client = Client(node, await endpoints(node, apps, 2))
    node.ctx.index = index(2, loadBalancer={"simple": "LEAST_REQUEST"})
    first = [await client.connect() for _ in range(6)]
    counts = {ip: sum(1 for _, e in first if e == ip) for ip in ENDPOINTS[:2]}
    assert counts == {ENDPOINTS[0]: 3, ENDPOINTS[1]: 3}, "open connections are spread evenly"
    busy, idle = ENDPOINTS[:2]
    await client.close(*(i for i, e in first if e == idle))
    # `busy` holds three open connections, `idle` none: the next three all go to `idle`.
    then = [(await client.connect())[1] for _ in range(3)]
    assert then == [idle] * 3
    assert [e for e, _ in client.open.values()].count(busy) == 3
    await client.close_all()


async def test_a_consistent_hash_on_the_source_ip_keeps_each_client_on_one_endpoint(
    node: ServedNode, apps: StartApp
) -> None:
    client = Client(node, await endpoints(node, apps, 3))
    node.ctx.index = index(3, loadBalancer={"consistentHash": {"useSourceIp": True}})
    where: dict[str, set[str | None]] = {}
    for n in range(3, 11):
        ip = f"127.0.0.{n}"
        for _ in range(4):
            i, endpoint = await client.connect(ip)
            where.setdefault(ip, set()).add(endpoint)
            await client.close(i)
    assert all(len(picked) == 1 and None not in picked for picked in where.values()), where
    assert len(set().union(*where.values())) > 1, "different clients may land on different endpoints"


async def test_max_connections_resets_a_connection_over_it_and_admits_again_once_one_ends(
    node: ServedNode, apps: StartApp
) -> None:
    client = Client(node, await endpoints(node, apps, 2))
    node.ctx.index = index(2, connectionPool={"tcp": {"maxConnections": 1}})
    first, endpoint = await client.connect()
    assert endpoint is not None
    _, over = await client.connect()
    assert over is None, "the second concurrent connection is reset"
    assert node.errors("overflow", "outbound") == 1
    assert node.metrics.traffic[("overflows", "legacy", "db", "connections")] == 1
    assert opened_with_flags(node, "UO") == 1
    await client.close(first)
    again, endpoint = await client.connect()
    assert endpoint is not None, "the slot was freed when the first connection ended"
    assert node.errors("overflow", "outbound") == 1
    await client.close(again)


@pytest.mark.parametrize(
    ("detection", "failures"),
    [({"consecutiveGatewayErrors": 2, "consecutive5xxErrors": 0}, 2), ({"consecutive5xxErrors": 3}, 3)],
    ids=["gateway-errors", "5xx-errors"],
)
async def test_an_endpoint_refusing_connections_is_ejected_after_consecutive_connect_failures(
    node: ServedNode, apps: StartApp, detection: dict[str, Any], failures: int
) -> None:
    by_port = await endpoints(node, apps, 1)
    closed = socket.socket()
    closed.bind((LOOPBACK, 0))
    node.sockets.addresses[(ENDPOINTS[1], TARGET)] = closed.getsockname()[:2]
    closed.close()  # nothing listens there: every connect is refused
    client = Client(node, by_port)
    node.ctx.index = index(2, outlierDetection={**detection, "baseEjectionTime": "60s", "maxEjectionPercent": 50})
    picked = []
    for _ in range(2 * failures + 6):
        i, endpoint = await client.connect()
        picked.append(endpoint)
        if endpoint is not None:
            await client.close(i)
    assert picked.count(None) == failures, picked
    # Round robin alternates until the refusing endpoint is ejected; from then on it is skipped.
    last = max(n for n, endpoint in enumerate(picked) if endpoint is None)
    assert last <= 2 * failures and picked[last + 1 :] == [ENDPOINTS[0]] * (len(picked) - last - 1)
    assert node.metrics.traffic[("ejections", "legacy", "db", "")] == 1
    assert opened_with_flags(node, "CONNECT") == failures
