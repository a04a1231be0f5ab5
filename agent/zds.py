"""The agent's ZDS server: hands enrolled pods (and their netns fds) to the node's ztunnel.

One ztunnel is served at a time; a new connection replaces the old one (a restarted ztunnel, or the
new one of a rolling update). On every connect the agent replays all enrolled pods as `keep_workload`
and ends with `snapshot_sent`. Messages are sent one at a time and each waits for its ack, so
`served` is exactly what ztunnel has acknowledged; a pod sent but not acked is pending.
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


class ZdsServer:
    """Listens on the ZDS socket; `send_*` deliver to the connected ztunnel and wait for its ack."""

    def __init__(self, path: Path, replay: Callable[[], list[tuple[str, protocol.WorkloadInfo, int]]]) -> None:
        self.path = path
        self.replay = replay
        """Returns (uid, info, netns fd) for every pod ztunnel should hold; the fds are the caller's."""
        self.served: set[str] = set()
        self.connected = False
        self.connects = 0
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
                if self._conn is not None:
                    log.info("a new ztunnel connected; replacing the previous connection")
                    self._conn.close()
                self._conn, self.connected, self.served = conn, True, set()
                self.connects += 1
                try:
                    await self._exchange({"type": "hello", "version": protocol.VERSION})
                    for uid, info, fd in self.replay():
                        await self._exchange({"type": "keep_workload", "uid": uid, "workload": info.to_wire()}, fd)
                        self.served.add(uid)
                    await self._exchange({"type": "snapshot_sent"})
                    log.info("ztunnel connected; replayed %d pods", len(self.served))
                    self._watcher = asyncio.create_task(self._watch(conn), name="zds-watch")
                except (ZdsUnavailable, OSError) as exc:
                    log.warning("ztunnel connection failed during replay: %s", exc)
                    self._drop()
            if self.on_connect is not None:
                self.on_connect()

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
        self._conn, self.connected, self.served = None, False, set()

    async def _exchange(self, message: dict[str, Any], fd: int | None = None) -> None:
        """Send one message and wait for its ack (call with the lock held)."""
        conn = self._conn
        if conn is None:
            raise ZdsUnavailable("no ztunnel connected")
        try:
            protocol.send(conn, message, fd)  # a small datagram on a fresh socket: does not block
            async with asyncio.timeout(ACK_TIMEOUT):
                got = await protocol.recv_async(conn)
        except (TimeoutError, OSError, protocol.ZdsError) as exc:
            self._drop()
            raise ZdsUnavailable(f"ztunnel did not acknowledge {message['type']}: {exc!r}") from None
        if got is None:
            self._drop()
            raise ZdsUnavailable("ztunnel closed the connection")
        reply, fds = got
        for extra in fds:
            os.close(extra)
        if reply.get("type") != "ack":
            self._drop()
            raise ZdsUnavailable(f"expected an ack, got {reply.get('type')}")
        if reply.get("error"):
            raise ZdsUnavailable(f"ztunnel refused {message['type']}: {reply['error']}")

    async def add(self, uid: str, info: protocol.WorkloadInfo, fd: int) -> None:
        async with self._lock:
            await self._exchange({"type": "add_workload", "uid": uid, "workload": info.to_wire()}, fd)
            self.served.add(uid)

    async def delete(self, uid: str) -> None:
        async with self._lock:
            await self._exchange({"type": "del_workload", "uid": uid})
            self.served.discard(uid)
