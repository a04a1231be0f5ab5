"""One ZDS owner at a time: the agent hands the node to the newest ztunnel, once, and never back.

The agent's real `ZdsServer` on a unix socket; ztunnels are scripted ZDS clients that ack everything and
say who they are (start time, pid) in the hello ack, as ztunnel does (or say nothing, as one from before).
What is checked is what an operator sees: who owns the node (the agent's status), how many takeovers it
counted, which ztunnel was told `superseded`, and that the previous owner kept every pod until the new one
had them all.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent.zds import ZdsServer
from meshlet_contracts import zds as protocol

pytestmark = pytest.mark.asyncio
PODS = ("uid-a", "uid-b")


class Ztunnel:
    """A scripted ztunnel: acks every message, records them, stops at `superseded` or end of stream."""

    def __init__(self, path: Path, who: protocol.ZtunnelId | None) -> None:
        self.path, self.who = path, who
        self.messages: list[str] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Ztunnel:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(self.sock, str(self.path))
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while (got := await protocol.recv_async(self.sock)) is not None:
            message, fds = got
            for fd in fds:
                os.close(fd)
            self.messages.append(message["type"])
            ack: dict[str, Any] = {"type": "ack", "error": None}
            if message["type"] == "hello" and self.who is not None:
                ack.update(self.who.to_wire())
            protocol.send(self.sock, ack)
            if message["type"] == "superseded":
                return

    @property
    def superseded(self) -> bool:
        return "superseded" in self.messages

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.sock.close()


async def until(condition: Any, what: str) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[ZdsServer]:
    fds = {uid: os.open("/dev/null", os.O_RDONLY) for uid in PODS}
    info = protocol.WorkloadInfo("web", "mesh", "default", ("10.0.0.5",))
    zds = ZdsServer(tmp_path / "ztunnel.sock", lambda: [(uid, info, fd) for uid, fd in fds.items()])
    await zds.start()
    yield zds
    await zds.close()
    for fd in fds.values():
        os.close(fd)


async def test_a_newer_ztunnel_gets_every_pod_then_the_old_one_is_told_superseded(server: ZdsServer) -> None:
    old = await Ztunnel(server.path, protocol.ZtunnelId(100.0, 10)).start()
    await until(lambda: server.owner is not None and server.owner.pid == 10, "the first ztunnel owning the node")
    new = await Ztunnel(server.path, protocol.ZtunnelId(200.0, 20)).start()
    await until(lambda: server.owner is not None and server.owner.pid == 20, "the takeover")
    assert new.messages == ["hello", "keep_workload", "keep_workload", "snapshot_sent"]
    await until(lambda: old.superseded, "the old ztunnel told")
    assert server.connected and server.served == set(PODS) and server.connects == 2
    assert not new.superseded
    await old.close()
    await new.close()


async def test_an_older_ztunnel_reconnecting_is_refused_and_the_owner_keeps_the_node(server: ZdsServer) -> None:
    new = await Ztunnel(server.path, protocol.ZtunnelId(200.0, 20)).start()
    await until(lambda: server.connects == 1, "the first owner")
    old = await Ztunnel(server.path, protocol.ZtunnelId(100.0, 10)).start()
    await until(lambda: old.superseded, "the older one refused")
    assert old.messages == ["hello", "superseded"]  # no pod was handed to it
    assert server.owner == protocol.ZtunnelId(200.0, 20) and server.connects == 1 and server.connected
    assert not new.superseded
    await old.close()
    await new.close()


async def test_two_ztunnels_overlapping_change_the_owner_exactly_once(server: ZdsServer) -> None:
    """The upgrade: whichever order they connect in, one takeover at most, and the newest ends up owning."""
    newest = protocol.ZtunnelId(300.0, 30)
    first = await Ztunnel(server.path, protocol.ZtunnelId(299.0, 29)).start()
    second = await Ztunnel(server.path, newest).start()
    await until(lambda: server.owner == newest and first.superseded, "the newest owning")
    assert server.connects == 2 and not second.superseded
    await first.close()
    await second.close()


async def test_ztunnels_that_do_not_say_who_they_are_take_over_as_the_last_to_connect(server: ZdsServer) -> None:
    """Compatibility with ztunnels from before ownership was ordered: neither is sent `superseded` (it would
    not know the message); the connection the second replaces is closed, as before."""
    old = await Ztunnel(server.path, None).start()
    await until(lambda: server.connects == 1, "the first ztunnel")
    new = await Ztunnel(server.path, None).start()
    await until(lambda: server.connects == 2, "the second ztunnel")
    assert old.task is not None
    await asyncio.wait_for(old.task, 5)  # its connection was closed
    assert not old.superseded and server.owner is None and server.connected
    await old.close()
    await new.close()


async def test_a_ztunnel_that_does_not_say_who_it_is_counts_as_the_oldest(server: ZdsServer) -> None:
    legacy = await Ztunnel(server.path, None).start()
    await until(lambda: server.connects == 1, "the first ztunnel")
    ordered = await Ztunnel(server.path, protocol.ZtunnelId(1.0, 7)).start()
    await until(lambda: server.owner is not None and server.owner.pid == 7, "the ordered one taking over")
    assert legacy.task is not None
    await asyncio.wait_for(legacy.task, 5)  # closed, not told a message it would not know
    again = await Ztunnel(server.path, None).start()  # reconnecting: refused, the owner stays
    assert again.task is not None
    await asyncio.wait_for(again.task, 5)
    assert again.messages == ["hello"] and server.owner.pid == 7 and server.connects == 2
    for z in (legacy, ordered, again):
        await z.close()


@pytest.mark.parametrize(
    "ack",
    [{}, {"pid": 5}, {"started": 1.0}, {"started": True, "pid": 5}, {"started": 1.0, "pid": False},
     {"started": float("nan"), "pid": 5}, {"started": "1", "pid": 5}],
)  # fmt: skip
async def test_a_hello_ack_that_names_nobody_is_read_as_an_unordered_ztunnel(ack: dict[str, Any]) -> None:
    assert protocol.ZtunnelId.from_ack({"type": "ack", **ack}) is None


async def test_ztunnels_are_ordered_by_start_then_pid() -> None:
    assert protocol.ZtunnelId(1.0, 99) < protocol.ZtunnelId(2.0, 1) < protocol.ZtunnelId(2.0, 2)
    assert protocol.ZtunnelId.from_ack({"started": 5, "pid": 7}) == protocol.ZtunnelId(5.0, 7)
