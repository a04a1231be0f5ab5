"""ZDS (ztunnel discovery service): the agent tells ztunnel which pods to serve, handing over their netns.

Transport: a SOCK_SEQPACKET unix socket (the agent listens, ztunnel connects), one JSON object per
packet, a netns file descriptor attached as SCM_RIGHTS to `add_workload` and `keep_workload`.

    agent -> ztunnel: {"type": "hello", "version": 1}
                      {"type": "add_workload", "uid", "workload": {name, namespace, serviceAccount, ips}} + fd
                      {"type": "keep_workload", "uid"} + fd   (replay after a reconnect: already served)
                      {"type": "del_workload", "uid"}
                      {"type": "snapshot_sent"}               (replay done: drop every pod not replayed)
                      {"type": "superseded", "by": pid | null} (a newer ztunnel owns the node: drain, do not
                                                                reconnect)
    ztunnel -> agent: {"type": "ack", "error": null | "reason"} for each message, in order; the ack of
                      `hello` also says who this ztunnel is: "pid" and "started" (its start, Unix seconds).

One ztunnel owns the node's pods at a time. When a second one connects (an upgrade started beside the
running one), the agent replays the pods to it, then tells the previous owner `superseded`; a ztunnel
older than the owner is told `superseded` at once. The newest start wins (pid breaks a tie), so two
ztunnels never take the node back and forth. A ztunnel whose hello ack names no "started" (written before
this) is ordered as the oldest (of two such, the last to connect wins, as before) and is never sent
`superseded`: it would not know the message.

This module is the schema and the socket helpers both sides use (agent and ztunnel import it from the
contracts package; it imports neither).
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import socket
from dataclasses import dataclass
from typing import Any

from meshlet_contracts.identity import IdentityError, check_namespace, check_service_account

VERSION = 1
MAX_MESSAGE = 64 * 1024
MESSAGE_TYPES = ("hello", "add_workload", "keep_workload", "del_workload", "snapshot_sent", "superseded", "ack")
WITH_FD = ("add_workload", "keep_workload")


class ZdsError(ValueError):
    """A ZDS message is malformed or arrived without the fd it needs."""


@dataclass(frozen=True, slots=True, order=True)
class ZtunnelId:
    """Who a connected ztunnel is, as its hello ack says; ordered oldest first (start time, then pid)."""

    started: float
    pid: int

    def to_wire(self) -> dict[str, Any]:
        return {"started": self.started, "pid": self.pid}

    @classmethod
    def from_ack(cls, ack: dict[str, Any]) -> ZtunnelId | None:
        """From a hello ack; None when it names nobody (a ztunnel from before ownership was ordered)."""
        started, pid = ack.get("started"), ack.get("pid")
        if any(isinstance(v, bool) for v in (started, pid)) or not isinstance(pid, int):
            return None
        # An int past any float (10**400 is valid JSON) would make isfinite raise OverflowError: refused first.
        if not isinstance(started, (int, float)) or abs(started) > 1e300 or not math.isfinite(started):
            return None  # NaN would order nothing
        return cls(float(started), pid)


@dataclass(frozen=True, slots=True)
class WorkloadInfo:
    """What ztunnel is told about a pod (the rest it learns from control, by uid)."""

    name: str
    namespace: str
    service_account: str
    ips: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "serviceAccount": self.service_account,
                "ips": list(self.ips)}  # fmt: skip

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> WorkloadInfo:
        try:
            info = cls(str(d["name"]), str(d["namespace"]), str(d["serviceAccount"]), tuple(map(str, d["ips"])))
        except (KeyError, TypeError) as exc:
            raise ZdsError(f"workload info lacks a field: {exc}") from None
        try:  # they make the pod's SPIFFE ID: refused here, for this one message, rather than when serving it
            check_namespace(info.namespace)
            check_service_account(info.service_account)
        except IdentityError as exc:
            raise ZdsError(f"workload info: {exc}") from None
        return info


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ZdsError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def decode(data: bytes, fds: list[int]) -> dict[str, Any]:
    """Parse one packet; checks the type and that an fd came exactly with the messages that need one."""
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ZdsError(f"not JSON: {exc}") from None
    except RecursionError:  # 64 KiB of '[' is far deeper than the parser recurses: still this packet's error
        raise ZdsError("not JSON: nested too deeply") from None
    if not isinstance(message, dict) or message.get("type") not in MESSAGE_TYPES:
        raise ZdsError(f"unknown message {str(message)[:80]!r}")
    needs_fd = message["type"] in WITH_FD
    if needs_fd and len(fds) != 1:
        raise ZdsError(f"{message['type']} needs exactly one netns fd, got {len(fds)}")
    if not needs_fd and fds:
        raise ZdsError(f"{message['type']} carries no fd, got {len(fds)}")
    if message["type"] in ("add_workload", "keep_workload", "del_workload") and not isinstance(message.get("uid"), str):
        raise ZdsError(f"{message['type']} needs a string uid")
    return message


def send(sock: socket.socket, message: dict[str, Any], fd: int | None = None) -> None:
    """Send one message (blocking socket, or one known writable)."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if fd is not None else []
    sock.sendmsg([encode(message)], ancillary)


def recv(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """Receive one message and its fds (the caller owns and must close them); None at end of stream."""
    fds = array.array("i")
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data and not fds:
        return None
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            socket.close(fd)
        raise ZdsError("ancillary data truncated: too many fds in one message")
    try:
        return decode(data, list(fds)), list(fds)
    except ZdsError:
        for fd in fds:
            socket.close(fd)
        raise


async def readable(sock: socket.socket) -> None:
    """Wait until a non-blocking `sock` has a message (or end of stream) to read."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def recv_async(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """`recv` for a non-blocking socket on the event loop."""
    while True:
        try:
            return recv(sock)
        except BlockingIOError:
            await readable(sock)
