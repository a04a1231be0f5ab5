"""ztunnel's ZDS client against a scripted agent over a real SOCK_SEQPACKET socket: one message that cannot
be applied costs that message only (acked with its error), and no failure ends the client for good.

The pods' netns are fresh anonymous namespaces (root only), so the real listeners and the real pod hooks
(`PodServing`) run without touching any netns of the machine."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from meshlet_contracts import zds as protocol
from meshlet_contracts.netns import CLONE_NEWNET, entered_fd, setns
from ztunnel.config.client import NodeCredential
from ztunnel.identity.manager import IdentityManager, WorkloadCertificate
from ztunnel.inpod.client import ZdsClient
from ztunnel.inpod.manager import WorkloadManager
from ztunnel.proxy.context import ProxyContext
from ztunnel.proxy.serving import PodServing

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates network namespaces: run as root"),
]
EXCHANGE_TIMEOUT = 5.0
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sh22x"  # struct ifreq: the name, then ifr_flags in the union


def fresh_netns() -> int:
    """An fd of a new netns with only loopback (up); it lives while some fd or socket holds it."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        try:
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # lo up, by ioctl (no event loop)
                flags = struct.unpack(IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))
            return fd
        finally:
            setns(own)
    finally:
        os.close(own)


def accepts(netns_fd: int, port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` inside that netns."""
    with entered_fd(netns_fd):
        s = socket.socket()
    with s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def holders(netns_fd: int) -> int:
    """How many fds of this process refer to the netns of `netns_fd` (the test's own included)."""
    link = os.readlink(f"/proc/self/fd/{netns_fd}")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == link
    return count


@pytest.fixture
def netns() -> Iterator[list[int]]:
    """Fresh netns fds made by the test (closed afterwards); `netns.append(fresh_netns())` to add one."""
    fds: list[int] = []
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


class ScriptedAgent:
    """The agent's end of ZDS, driven message by message by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.listener.setblocking(False)
        self.conns: list[socket.socket] = []

    async def accept(self) -> socket.socket:
        async with asyncio.timeout(EXCHANGE_TIMEOUT):
            conn, _ = await asyncio.get_running_loop().sock_accept(self.listener)
        conn.setblocking(False)
        self.conns.append(conn)
        return conn

    async def exchange(self, conn: socket.socket, message: dict[str, Any], fd: int | None = None) -> dict[str, Any]:
        """Send one message and return ztunnel's ack (fails if ztunnel closes the connection instead)."""
        protocol.send(conn, message, fd)
        async with asyncio.timeout(EXCHANGE_TIMEOUT):
            got = await protocol.recv_async(conn)
        assert got is not None, f"ztunnel closed the ZDS connection instead of acking {message['type']}"
        reply, fds = got
        assert not fds and reply["type"] == "ack"
        return reply

    def close(self) -> None:
        for s in (*self.conns, self.listener):
            s.close()


@pytest_asyncio.fixture
async def agent(tmp_path: Path) -> AsyncIterator[ScriptedAgent]:
    a = ScriptedAgent(tmp_path / "zds.sock")
    try:
        yield a
    finally:
        a.close()


@pytest_asyncio.fixture
async def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ProxyContext]:
    """A proxy context whose certificate requests never complete: these tests stop at the listeners."""
    identities = IdentityManager("https://control.invalid:15012", NodeCredential.in_dir(tmp_path))

    async def no_answer(spiffe_id: str) -> WorkloadCertificate:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(identities, "_request", no_answer)
    ctx = ProxyContext(node="node1", trust_domain="cluster.local",
                       identities=identities)  # fmt: skip
    try:
        yield ctx
    finally:
        pending = [*ctx.tasks, *identities._fetches.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@contextlib.asynccontextmanager
async def following(client: ZdsClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run(), name="zds")
    try:
        yield task
    finally:
        client.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        client.manager.close()


async def test_a_pod_that_cannot_be_served_is_nacked_and_the_next_add_is_applied(
    agent: ScriptedAgent, proxy: ProxyContext, netns: list[int]
) -> None:
    manager = WorkloadManager(PodServing(proxy))
    client = ZdsClient(agent.path, manager)
    netns += [fresh_netns(), fresh_netns()]
    ghost, web = netns
    async with following(client) as task:
        conn = await agent.accept()
        # A keep without details for a uid control does not know: the pod hook raises IdentityError.
        reply = await agent.exchange(conn, {"type": "keep_workload", "uid": "ghost"}, ghost)
        assert "IdentityError" in reply["error"] and "control does not know" in reply["error"]
        assert "ghost" not in manager.pods and "ghost" not in proxy.pods
        assert holders(ghost) == 1  # only the test's own fd: ztunnel kept neither the fd nor listeners
        assert (client.errors, client.last_error) == (1, f"keep_workload ghost: {reply['error']}")
        info = protocol.WorkloadInfo("web-1a", "mesh", "web", ("10.1.0.2",))
        reply = await agent.exchange(conn, {"type": "add_workload", "uid": "web", "workload": info.to_wire()}, web)
        assert reply["error"] is None
        assert "web" in manager.pods and proxy.pods["web"].name == "web-1a"
        assert {s.getsockname()[1] for s in manager.pods["web"][1].sockets.values()} == {15001, 15006, 15008}
        assert not task.done() and client.connected


async def test_an_unexpected_failure_of_a_session_reconnects_instead_of_ending_the_client(
    agent: ScriptedAgent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manager = WorkloadManager()
    client = ZdsClient(agent.path, manager, backoff_max=0.2)
    failures = ["a bug in the session"]

    def replay_started() -> None:  # fails on the first connect only
        if failures:
            raise RuntimeError(failures.pop())

    monkeypatch.setattr(manager, "replay_started", replay_started)
    with caplog.at_level(logging.ERROR, logger="ztunnel.inpod.client"):
        async with following(client) as task:
            await agent.accept()  # the session fails at once and the client drops this connection
            conn = await agent.accept()  # ... and connects again
            assert (await agent.exchange(conn, {"type": "snapshot_sent"}))["error"] is None
            assert manager.snapshots == 1 and not task.done()
    assert any(r.exc_info and "a bug in the session" in str(r.exc_info[1]) for r in caplog.records)  # traceback


async def test_a_keep_with_the_pods_new_netns_moves_its_listeners_there(agent: ScriptedAgent, netns: list[int]) -> None:
    """An agent restarted after a pod's netns was recreated replays the pod with its new netns."""
    manager = WorkloadManager()
    client = ZdsClient(agent.path, manager)
    netns += [fresh_netns(), fresh_netns()]
    old, new = netns
    info = protocol.WorkloadInfo("web-1a", "mesh", "web", ("10.1.0.2",)).to_wire()
    async with following(client):
        conn = await agent.accept()
        assert (await agent.exchange(conn, {"type": "add_workload", "uid": "web", "workload": info}, old))[
            "error"
        ] is None
        assert accepts(old, 15001) and not accepts(new, 15001)
        conn.close()  # the agent restarts
        conn = await agent.accept()
        assert (await agent.exchange(conn, {"type": "keep_workload", "uid": "web", "workload": info}, new))[
            "error"
        ] is None
        assert (await agent.exchange(conn, {"type": "snapshot_sent"}))["error"] is None
        assert all(accepts(new, port) for port in (15001, 15006, 15008))
        assert not accepts(old, 15001)
        assert holders(old) == 1  # ztunnel let go of the old netns
