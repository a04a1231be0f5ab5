"""ztunnel's ZDS client: connects to the agent's socket, applies each message, acks it.

Each message is acked after it has been applied (listeners open, or closed), with the error when it
could not be, so the agent's view (`pending` until acked) is exact. Whatever goes wrong applying one
message (a bad fd, a pod nobody knows, a bug) is that message's error: acked, logged once, counted in
`errors`; the stream goes on. The client reconnects with backoff when the agent restarts, and after any
unexpected failure of a session: it never stops following the agent until `stop`. On every connect the
agent replays its pods and ends with `snapshot_sent`.

The ack of the agent's hello says who this process is (start time, pid): the agent hands the node to the
newest ztunnel. When a newer one took over (an upgrade), the agent says `superseded`: this client acks it,
stops for good (reconnecting would only be refused) and calls `on_superseded`, which makes ztunnel drain.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from meshlet_contracts import zds as protocol
from meshlet_contracts.backoff import Backoff
from ztunnel.identity.manager import IdentityError
from ztunnel.inpod.manager import WorkloadManager

log = logging.getLogger(__name__)


class ZdsClient:
    """Follows the agent's ZDS stream into a `WorkloadManager`."""

    def __init__(self, path: Path, manager: WorkloadManager, backoff_max: float = 5.0) -> None:
        self.path = path
        self.manager = manager
        self.backoff_max = backoff_max
        self.connected = False
        self.errors = 0
        """Messages that could not be applied (each acked with its error), since start."""
        self.last_error: str | None = None
        self.identity = protocol.ZtunnelId(time.time(), os.getpid())
        """Who this process says it is in the hello ack: the newest start owns the node."""
        self.superseded_by: int | None = None
        """Set (to the newer ztunnel's pid, 0 if unnamed) once the agent said a newer ztunnel owns the node."""
        self.on_superseded: Callable[[], None] | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff(0.1, self.backoff_max)
        while not self._stopping.is_set():
            try:
                await self._session()
                backoff.reset()
            except (OSError, protocol.ZdsError) as exc:
                log.warning("ZDS connection to %s failed: %s; retrying", self.path, exc)
            except Exception:
                # A bug must not leave ztunnel ready but deaf to pod changes: reconnect (the agent then
                # replays every pod), with backoff so a failure that repeats does not spin.
                log.exception("ZDS session with %s failed unexpectedly; reconnecting", self.path)
            finally:
                self.connected = False
            await backoff.sleep(self._stopping)

    def stop(self) -> None:
        """Stop reconnecting; the caller cancels the task running `run` to end a live session."""
        self._stopping.set()

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, str(self.path))
            self.connected = True
            self.manager.replay_started()
            while True:
                got = await protocol.recv_async(sock)
                if got is None:
                    return  # the agent went away: reconnect
                message, fds = got
                error = self._apply(message, fds)
                ack: dict[str, object] = {"type": "ack", "error": error}
                if message["type"] == "hello":
                    ack.update(self.identity.to_wire())
                protocol.send(sock, ack)
                if message["type"] == "superseded":
                    self._superseded(message.get("by"))
                    return

    def _superseded(self, by: object) -> None:
        self.superseded_by = by if isinstance(by, int) and not isinstance(by, bool) else 0
        log.info("ztunnel pid %s owns the node now: this one (pid %d) drains", by, self.identity.pid)
        self.stop()
        if self.on_superseded is not None:
            self.on_superseded()

    def _apply(self, message: dict[str, object], fds: list[int]) -> str | None:
        """Apply one message; returns the error to ack with (None when applied)."""
        kind, uid = message["type"], str(message.get("uid", ""))
        try:
            if kind in ("add_workload", "keep_workload"):
                raw = message.get("workload")
                info = protocol.WorkloadInfo.from_wire(raw) if isinstance(raw, dict) else None
                self.manager.add(uid, info, fds.pop())
            elif kind == "del_workload":
                self.manager.delete(uid)
            elif kind == "snapshot_sent":
                self.manager.snapshot_done()
            return None
        except (OSError, protocol.ZdsError, IdentityError) as exc:  # the pod's problem, said in the message
            return self._failed(kind, uid, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug: still this message's error only, but worth its traceback
            log.exception("applying %s for %s failed", kind, uid)
            return self._failed(kind, uid, f"{type(exc).__name__}: {exc}", logged=True)
        finally:
            for fd in fds:
                os.close(fd)

    def _failed(self, kind: object, uid: str, error: str, logged: bool = False) -> str:
        self.errors += 1
        self.last_error = f"{kind} {uid}: {error}"
        if not logged:
            log.error("could not apply %s for %s: %s", kind, uid, error)
        return error
