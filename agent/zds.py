"""The agent's ZDS server: hands enrolled pods (and their netns fds) to the node's ztunnel.

One ztunnel owns the node at a time. A ztunnel that connects says who it is in its hello ack (start
time, pid): the newest wins. A newer one (an upgrade started beside the running one) first gets every
enrolled pod replayed as `keep_workload` and `snapshot_sent` while the owner keeps serving; only then is
it the owner, and the previous one is told `superseded` (it drains and does not come back). An older one
is told `superseded` at once and refused, so two ztunnels never trade the node back and forth. A ztunnel
that does not say who it is (from before this) counts as the oldest; of two such, the last to connect wins,
as it always did. Messages
are sent one at a time and each waits for its ack, so `served` is exactly what the owner has acknowledged;
a pod sent but not acked is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshlet_contracts import zds as protocol
from meshlet_contracts.supervision import Supervisor

log = logging.getLogger(__name__)
ACK_TIMEOUT = 5.0
WATCH_INTERVAL = 0.5


class ZdsUnavailable(Exception):
    """No ztunnel is connected, or it did not acknowledge."""


class ZdsRefused(ZdsUnavailable):
    """ztunnel acknowledged the message with an error: that message failed, the connection is fine."""


class ZdsServer:
    """Listens on the ZDS socket; `send_*` deliver to the connected ztunnel and wait for its ack."""

    def __init__(self, path: Path, replay: Callable[[], list[tuple[str, protocol.WorkloadInfo, int]]]) -> None:
        self.path = path
        self.replay = replay
        """Returns (uid, info, netns fd) for every pod ztunnel should hold; the fds are the caller's."""
        self.served: set[str] = set()
        self.connected = False
        self.connects = 0
        """Ztunnels that became the owner (a takeover counts once), since start."""
        self.owner: protocol.ZtunnelId | None = None
        """Who the connected ztunnel said it is (None: nobody connected, or a ztunnel that does not say)."""
        self._conn: socket.socket | None = None
        self._lock = asyncio.Lock()
        self._listener: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.on_connect: Callable[[], None] | None = None

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Listen, and accept ztunnels in a task (kept alive by `supervisor`, which then also ends it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket file left by an earlier agent
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(4)
        sock.setblocking(False)
        self._listener = sock
        if supervisor is not None:
            supervisor.start("zds-accept", self._accept_loop)
        else:
            self._task = asyncio.create_task(self._accept_loop(), name="zds-accept")

    async def close(self) -> None:
        for task in (self._task, self._watcher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for s in (self._conn, self._listener):
            if s is not None:
                s.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            conn.setblocking(False)
            async with self._lock:
                took_over = await self._handover(conn)
            if took_over and self.on_connect is not None:
                self.on_connect()

    async def _handover(self, conn: socket.socket) -> bool:
        """Make the ztunnel on `conn` the owner if it is the newest (call with the lock held); whether it is."""
        try:
            ack = await self._exchange({"type": "hello", "version": protocol.VERSION}, conn=conn)
        except ZdsUnavailable as exc:
            log.warning("a connecting ztunnel failed its hello: %s", exc)
            conn.close()
            return False
        who = protocol.ZtunnelId.from_ack(ack)
        owner = self.owner
        if self._conn is not None and owner is not None and (who is None or who < owner):
            log.warning("refusing ztunnel %s: pid %d, started later (%.3f), owns the node",
                        _name(who), owner.pid, owner.started)  # fmt: skip
            if who is None:
                conn.close()  # it would not know `superseded`
            else:
                await self._supersede(conn, owner)
            return False
        served: set[str] = set()
        try:
            for uid, info, fd in self.replay():
                try:
                    await self._exchange({"type": "keep_workload", "uid": uid, "workload": info.to_wire()}, fd, conn)
                    served.add(uid)
                except ZdsRefused as exc:  # that pod stays pending: the reconciler adds it again
                    log.warning("ztunnel %s could not take %s: %s", _name(who), uid, exc)
            await self._exchange({"type": "snapshot_sent"}, conn=conn)
        except ZdsUnavailable as exc:
            log.warning("ztunnel %s failed during replay; the owner stays: %s", _name(who), exc)
            conn.close()
            return False
        previous, previous_owner = self._conn, owner
        self._conn, self.owner, self.connected, self.served = conn, who, True, served
        self.connects += 1
        self._watcher = asyncio.create_task(self._watch(conn), name="zds-watch")
        if previous is None:
            log.info("ztunnel %s connected; replayed %d pods", _name(who), len(served))
            return True
        log.info("ztunnel %s took over the node from %s; replayed %d pods", _name(who), _name(previous_owner),
                 len(served))  # fmt: skip
        if previous_owner is not None and who is not None and previous_owner != who:
            await self._supersede(previous, who)  # it drains now: its listeners close, the new ones take over
        else:
            previous.close()  # the same process reconnecting, or one that does not know `superseded`
        return True

    async def _supersede(self, conn: socket.socket, by: protocol.ZtunnelId) -> None:
        """Tell the ztunnel on `conn` that `by` owns the node, then close its connection."""
        try:
            await self._exchange({"type": "superseded", "by": by.pid}, conn=conn)
        except ZdsUnavailable as exc:
            log.info("a superseded ztunnel did not acknowledge it: %s", exc)
        conn.close()

    async def _watch(self, conn: socket.socket) -> None:
        """Notice a ztunnel that went away while nothing was being sent (status shows it at once,
        instead of at the next pod change). ztunnel sends only acks, so an idle socket that reads
        end-of-stream is a closed one."""
        while self._conn is conn:
            await asyncio.sleep(WATCH_INTERVAL)
            if self._lock.locked() or self._conn is not conn:
                continue  # an exchange is reading this socket: it will see the end itself
            try:
                data = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data == b"":
                log.warning("ztunnel closed the ZDS connection")
                self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self.owner, self.connected, self.served = None, None, False, set()

    async def _exchange(
        self, message: dict[str, Any], fd: int | None = None, conn: socket.socket | None = None
    ) -> dict[str, Any]:
        """Send one message to the owner (or to `conn`, a ztunnel not yet the owner) and return its ack (call
        with the lock held). A connection that fails is closed (the owner's: dropped)."""
        target = conn if conn is not None else self._conn
        if target is None:
            raise ZdsUnavailable("no ztunnel connected")

        def broken(why: str) -> ZdsUnavailable:
            if target is self._conn:
                self._drop()
            else:
                target.close()
            return ZdsUnavailable(why)

        try:
            protocol.send(target, message, fd)  # a small datagram on a fresh socket: does not block
            async with asyncio.timeout(ACK_TIMEOUT):
                got = await protocol.recv_async(target)
        except (TimeoutError, OSError, protocol.ZdsError) as exc:
            raise broken(f"ztunnel did not acknowledge {message['type']}: {exc!r}") from None
        if got is None:
            raise broken("ztunnel closed the connection")
        reply, fds = got
        for extra in fds:
            os.close(extra)
        if reply.get("type") != "ack":
            raise broken(f"expected an ack, got {reply.get('type')}")
        if reply.get("error"):
            raise ZdsRefused(f"ztunnel refused {message['type']}: {reply['error']}")
        return reply

    async def add(self, uid: str, info: protocol.WorkloadInfo, fd: int) -> None:
        async with self._lock:
            await self._exchange({"type": "add_workload", "uid": uid, "workload": info.to_wire()}, fd)
            self.served.add(uid)

    async def delete(self, uid: str) -> None:
        async with self._lock:
            await self._exchange({"type": "del_workload", "uid": uid})
            self.served.discard(uid)


def _name(who: protocol.ZtunnelId | None) -> str:
    return f"pid {who.pid}" if who is not None else "(unnamed)"
