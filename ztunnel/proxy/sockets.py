"""Sockets of the data path: opened inside a pod's netns, marked, and reset rather than closed on refusal.

Every upstream socket is created while the thread is in the pod's netns (so it leaves with the pod's IP
and its routes), carries ztunnel's mark (so the pod's own capture rules let it pass), and, towards an
app, may bind the caller's IP with IP_TRANSPARENT so the app sees who called. setns(2) is two fast
syscalls and never blocks, so it is done on the event loop thread: the home netns fd is opened once.

The proxy opens them through a `SocketFactory` held by its context (`NetnsSockets`, this behaviour, by
default), which also reads where a captured connection was going: tests hand it one that stays on
loopback, so the real connection handlers run without network namespaces, marks or root.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from typing import Protocol

from meshlet_contracts.netns import setns
from meshlet_contracts.ports import TRANSPARENT_MARK as APP_MARK
from meshlet_contracts.ports import ZTUNNEL_MARK
from ztunnel.proxy.origdst import OriginalDestination

# APP_MARK marks the transparent sockets to an app: the pod's reply routing (table 100) keys on it, for
# either redirection backend; ztunnel's other sockets carry ZTUNNEL_MARK, which capture skips.
CONNECT_TIMEOUT = 5.0
IP_TRANSPARENT = 19
"""Linux's IP_TRANSPARENT (the socket module lacks it before 3.12): bind or accept any address."""
_HOME = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
"""This process' own netns, taken at import (before any thread moves): where every setns returns to."""
_LINGER_RESET = struct.pack("ii", 1, 0)
TUNNEL_USER_TIMEOUT_MS = 20_000
"""An HBONE connection whose sent bytes stay unacknowledged this long is dead (its peer's netns or node went
without a FIN or RST): the kernel ends it, so the pool stops handing out a connection nobody answers on."""
TUNNEL_KEEPALIVE = (15, 5, 3)
"""TCP keepalive on HBONE connections (idle s, interval s, probes): an idle one to a vanished peer ends in
about 30 s rather than waiting for its idle timeout or the next stream."""


def tunnel_liveness(sock: socket.socket) -> None:
    """Keepalive and a user timeout on an HBONE socket (a listener's are inherited by what it accepts)."""
    idle, interval, probes = TUNNEL_KEEPALIVE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TUNNEL_USER_TIMEOUT_MS)


class SocketFactory(Protocol):
    """Every socket the data path opens, and where an accepted (captured) connection was going."""

    async def connect(self, netns_fd: int, ip: str, port: int, source_ip: str | None = None) -> socket.socket:
        """A connected, non-blocking socket from the pod of `netns_fd` to `ip:port`; with `source_ip`, one
        to an app that leaves from the caller's address (OSError, TimeoutError)."""
        ...

    def outbound_destination(self, sock: socket.socket, peer: tuple[str, int]) -> tuple[str, int]:
        """Where a connection accepted on a pod's 15001 from `peer` was going (OSError if unknown)."""
        ...

    def inbound_destination(self, sock: socket.socket) -> tuple[str, int]:
        """Where a connection accepted on a pod's 15006 was going."""
        ...


class NetnsSockets:
    """The production factory: sockets in the pod's netns, marked; original destinations from conntrack or
    the eBPF map (`origdst`)."""

    def __init__(self, origdst: OriginalDestination | None = None) -> None:
        self.origdst = origdst if origdst is not None else OriginalDestination(None)

    async def connect(self, netns_fd: int, ip: str, port: int, source_ip: str | None = None) -> socket.socket:
        return await connect(netns_fd, ip, port, source_ip)

    def outbound_destination(self, sock: socket.socket, peer: tuple[str, int]) -> tuple[str, int]:
        return self.origdst.outbound(sock, peer)

    def inbound_destination(self, sock: socket.socket) -> tuple[str, int]:
        return self.origdst.inbound(sock)


def pod_socket(netns_fd: int, source_ip: str | None = None) -> socket.socket:
    """A non-blocking TCP socket in the netns of `netns_fd`, marked as ztunnel's own; or, with
    `source_ip`, bound to that address (IP_TRANSPARENT) and marked for reply routing."""
    setns(netns_fd)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    finally:
        setns(_HOME)
    try:
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, ZTUNNEL_MARK if source_ip is None else APP_MARK)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source_ip is not None:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            s.bind((source_ip, 0))
    except BaseException:
        s.close()
        raise
    return s


async def connect(netns_fd: int, ip: str, port: int, source_ip: str | None = None) -> socket.socket:
    """A connected socket from the pod's netns to `ip:port` (ConnectionRefusedError, TimeoutError, OSError),
    the error's text saying why in the kernel's words (`ECONNREFUSED Connection refused`), for the log."""
    sock = pod_socket(netns_fd, source_ip)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except TimeoutError:
        sock.close()  # asyncio's own TimeoutError has no text: the log line would end with an empty reason
        raise TimeoutError(
            errno.ETIMEDOUT, f"ETIMEDOUT no answer from {ip}:{port} within {CONNECT_TIMEOUT:g} s"
        ) from None
    except OSError as exc:
        sock.close()
        raise explained(exc, ip, port) from None
    except BaseException:
        sock.close()
        raise
    return sock


def explained(exc: OSError, ip: str, port: int) -> OSError:
    """`exc` with a text that names the errno and says what it means: asyncio's sock_connect says only
    "Connect call failed"."""
    if exc.errno is None:
        return exc
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return OSError(exc.errno, f"{name} {os.strerror(exc.errno)} connecting to {ip}:{port}")  # keeps the subclass


def reset(transport: asyncio.BaseTransport) -> None:
    """Close with RST, not FIN: a refused or failed tunnel must not look like a clean end of stream."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass  # already closed: there is nothing left to reset
    transport.abort()  # type: ignore[attr-defined]
