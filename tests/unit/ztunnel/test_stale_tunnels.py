"""HBONE connections to a peer that vanished without a word: a deleted pod's netns takes its end of every
tunnel with it, no FIN, no RST. A new pod given the same IP (and identity) must not be sent streams over the
dead one's connection, where nothing ever answers.

The pool retires connections whose destination is no longer that workload (idle ones close now, busy ones
after their last stream), a CONNECT without an answer retires its connection and says so in its error, and
every tunnel socket carries keepalive and a user timeout so the kernel ends one that nobody acknowledges.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from control.model.kube import Namespace, Pod
from control.model.mesh import MeshSettings, workload_item
from tests.unit.ztunnel.test_hbone_connection import FakeTransport, until
from tests.unit.ztunnel.test_upgrade_drain import POD, UP, Owner, context, pair, pump
from ztunnel.config.state import ConfigState, apply
from ztunnel.inpod import listeners
from ztunnel.inpod.listeners import PodListeners
from ztunnel.main import Ztunnel
from ztunnel.proxy import connect
from ztunnel.proxy.connect import open_stream
from ztunnel.proxy.hbone import HboneConnection
from ztunnel.proxy.pool import HbonePool, PoolKey
from ztunnel.proxy.sockets import TUNNEL_KEEPALIVE, TUNNEL_USER_TIMEOUT_MS, tunnel_liveness
from ztunnel.state.mesh import MeshIndex

pytestmark = pytest.mark.asyncio
GONE: PoolKey = ("spiffe://td/ns/a/sa/x", "10.0.0.1", "10.0.0.9", "spiffe://td/ns/b/sa/y", "uid-9")
KEPT: PoolKey = ("spiffe://td/ns/a/sa/x", "10.0.0.1", "10.0.0.8", "spiffe://td/ns/b/sa/y", "uid-8")


async def test_retiring_closes_idle_connections_now_and_busy_ones_after_their_last_stream() -> None:
    idle, idle_transport, _ = pair()
    busy, busy_transport, server = pair()
    other, other_transport, _ = pair()
    pool = HbonePool("td")
    pool.conns = {GONE: [idle, busy], KEPT: [other]}
    stream, status = busy.open("10.0.0.9:8080", Owner(), [])
    pump(busy, busy_transport, server)
    assert await status == 200

    assert pool.retire(lambda key: key == KEPT) == 2
    assert pool.conns == {KEPT: [other]}  # the next stream to 10.0.0.9 dials afresh
    assert idle_transport.closed and not idle.usable
    assert not busy_transport.closed and not busy.usable  # its stream runs on
    assert not other_transport.closed and other.usable

    stream.abort()  # the last stream ends: the retired connection goes with it
    assert busy_transport.closed


async def test_a_connect_nobody_answers_fails_with_its_reason_and_retires_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connect, "RESPONSE_TIMEOUT", 0.05)
    conn = HboneConnection(client=True)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    # The server's SETTINGS never come, nor an answer: the peer is gone.

    class Pool:
        async def get(self, key: object, netns_fd: int, tls: object) -> HboneConnection:
            return conn

    owner = Owner()
    with pytest.raises(TimeoutError, match=r"no answer to the CONNECT from 10\.0\.0\.9 within 0\.05 s"):
        await open_stream(context(Pool()), POD, "10.0.0.1", UP, "id", owner)  # type: ignore[arg-type]
    assert conn.retired and not conn.usable
    await until(lambda: transport.closed)  # its only stream was the one that timed out
    assert len(owner.lost) == 1  # the app's connection learns once


def _liveness(sock: socket.socket) -> dict[str, Any]:
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "timing": tuple(
            sock.getsockopt(socket.IPPROTO_TCP, opt)
            for opt in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
        ),
        "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


WANTED = {"keepalive": 1, "timing": TUNNEL_KEEPALIVE, "user_timeout": TUNNEL_USER_TIMEOUT_MS}


async def test_tunnel_sockets_carry_keepalive_and_a_user_timeout() -> None:
    with socket.socket() as sock:
        tunnel_liveness(sock)
        assert _liveness(sock) == WANTED


async def test_the_hbone_listener_hands_its_liveness_to_what_it_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listeners, "PORTS", dict.fromkeys(listeners.PORTS, 0))  # any free port: no clash
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        opened = PodListeners.open(fd)
    except PermissionError:
        pytest.fail("opening a pod's listeners needs root (CAP_NET_ADMIN, IP_TRANSPARENT), as the suite runs")
    finally:
        os.close(fd)
    try:
        hbone = opened.sockets["hbone"]
        hbone.setblocking(True)
        with socket.create_connection(("127.0.0.1", hbone.getsockname()[1]), timeout=2):
            accepted, _ = hbone.accept()
            with accepted:
                assert _liveness(accepted) == WANTED
        assert _liveness(opened.sockets["outbound"])["keepalive"] == 0  # app-facing sockets are the app's
    finally:
        opened.close()


def _index(uid: str) -> MeshIndex:
    """A config with one workload at 10.0.0.9 whose identity is GONE's destination identity."""
    pod = Pod(uid=uid, name="web", namespace="b", node="n", service_account="y", ips=("10.0.0.9",), labels=(),
              host_network=False, phase="Running", ready=True, container_ports=())  # fmt: skip
    ambient = Namespace("b", (("meshlet.io/dataplane-mode", "ambient"),))
    item = workload_item(pod, ambient, MeshSettings(trust_domain="td"))
    message = {"type": "snapshot", "epoch": "e", "version": 1, "resources": {"workloads": [item]}}
    return MeshIndex.from_config(apply(ConfigState(), message))


async def test_a_pod_recreated_at_the_same_ip_with_the_same_identity_is_a_new_destination() -> None:
    conn, transport, _ = pair()
    pool = HbonePool("td")
    pool.conns = {GONE: [conn]}
    Ztunnel._retire_gone(pool, _index("uid-9"))  # the same pod: kept
    assert pool.conns == {GONE: [conn]} and conn.usable
    Ztunnel._retire_gone(pool, _index("uid-9b"))  # deleted and made again: same IP, same identity, a new uid
    assert pool.conns == {} and transport.closed
