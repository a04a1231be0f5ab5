"""What the integration tests run ztunnel's real data path with, all on 127.0.0.x in one process.

`LoopbackSockets` is the socket factory ztunnel's `ProxyContext` takes in place of the netns one: no
setns, no marks, no IP_TRANSPARENT (so no root), and the original destination of each connection from a
table the test fills, keyed by the client's address as the eBPF backend keys its map. A node's 15008
listens on an ephemeral port: `addresses` says where a dial to `(pod IP, 15008)` really goes.

Besides: certificates from a test CA, apps that stand in for the pods' applications, and waits with a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from asyncio.trsock import TransportSocket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from control.ca import CertificateAuthority
from tests.conftest import until
from ztunnel.identity.manager import WorkloadCertificate, new_csr

TD = "cluster.local"
CLIENT_ID = "spiffe://cluster.local/ns/a/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/b/sa/server"
LOOPBACK = "127.0.0.1"
CLIENT_IP = "127.0.0.2"
"""The client pod's address: its app's connections to 15001 leave from there."""
CLOSE_TIMEOUT = 5.0
SOCKET_BUFFER = 128 * 1024
"""Kernel buffer size of every plain TCP socket here. Loopback autotuning would otherwise let megabytes
hide in the kernel, and a stalled reader would not stall the HTTP/2 windows behind it: with small
kernel buffers it is ztunnel's flow control that holds bytes back, which is what the tests are about."""


def small_buffers(sock: socket.socket | TransportSocket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


class LoopbackSockets:
    """A `ztunnel.proxy.sockets.SocketFactory` on loopback: every node of a test shares one."""

    def __init__(self) -> None:
        self.addresses: dict[tuple[str, int], tuple[str, int]] = {}
        """Where a connection to (ip, port) really goes; absent: to (ip, port) itself."""
        self.destinations: dict[tuple[str, int], tuple[str, int]] = {}
        """Original destination of a captured connection, by its client's (ip, port)."""

    async def connect(self, netns_fd: int, ip: str, port: int, source_ip: str | None = None) -> socket.socket:
        sock = socket.socket()
        try:
            small_buffers(sock)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(sock, self.addresses.get((ip, port), (ip, port)))
        except BaseException:
            sock.close()
            raise
        return sock

    def outbound_destination(self, sock: socket.socket, peer: tuple[str, int]) -> tuple[str, int]:
        try:
            return self.destinations.pop((peer[0], peer[1]))
        except KeyError:
            raise OSError(f"no original destination for {peer[0]}:{peer[1]}") from None

    def inbound_destination(self, sock: socket.socket) -> tuple[str, int]:
        ip, port = sock.getsockname()[:2]
        return str(ip), int(port)

    @contextlib.asynccontextmanager
    async def captured(
        self, listener: int, destination: str, source_ip: str = CLIENT_IP
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A client app's connection to `destination` ("ip:port"), captured by the pod's 15001 (`listener`);
        closed on the way out whatever happened to it."""
        host, _, port = destination.rpartition(":")
        sock = socket.socket()
        try:
            small_buffers(sock)
            sock.setblocking(False)
            sock.bind((source_ip, 0))
            self.destinations[sock.getsockname()[:2]] = (host, int(port))
            await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, listener))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            yield reader, writer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def workload_certificate(ca: CertificateAuthority, spiffe_id: str) -> WorkloadCertificate:
    """What ztunnel's identity manager holds for `spiffe_id`: a key made here, its CSR signed by `ca`."""
    key_pem, csr_pem = new_csr(spiffe_id)
    issued = ca.sign_csr(csr_pem, spiffe_id, timedelta(hours=1))
    leaf = x509.load_pem_x509_certificate(issued.chain_pem[0].encode())
    return WorkloadCertificate(
        spiffe_id=spiffe_id,
        key_pem=key_pem,
        chain_pem=issued.chain_pem,
        root_pem=ca.root_pem,
        not_before=leaf.not_valid_before_utc,
        not_after=issued.not_after,
        fetched_at=datetime.now(UTC),
    )


async def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """`tests.conftest.until` with the longer deadline loopback proxies need on a loaded machine."""
    await until(condition, what, timeout)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class App:
    """A TCP server on loopback standing in for the destination pod's application."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.accepted = 0
        """Connections the app has had."""
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def authority(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> App:
        self._server = await asyncio.start_server(self._connected, LOOPBACK, 0)
        for sock in self._server.sockets:
            small_buffers(sock)  # inherited by accepted sockets
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.accepted += 1
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.handler(reader, writer)
        except Exception as exc:  # kept for the test to check: asyncio would only log it
            self.errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), CLOSE_TIMEOUT)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as an app that crashes or aborts its connection does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
