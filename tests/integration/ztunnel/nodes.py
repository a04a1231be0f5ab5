"""Two node proxies' data paths in one process on loopback, and apps for them to carry traffic to.

`SourceNode` stands for the client's ztunnel (outbound.py), `DestinationNode` for the server's 15008
(inbound.py). They are wired from the same pieces in the same order: `TcpSide`, `HboneConnection`,
`StreamSide`, `Tunnel`, `HbonePool`, `TlsContexts`, `peer_identity`. Left out is what needs root or
network namespaces (SO_ORIGINAL_DST, setns, IP_TRANSPARENT) and authorization: each outbound
listener therefore tunnels to one fixed authority, and the destination refuses the ports a test
names, as a DENY policy would. Every outbound listener shares one pool key, so all their tunnels are
streams of one HBONE connection, as one pod's connections to one node are.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from asyncio.trsock import TransportSocket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from control.ca import CertificateAuthority
from ztunnel.hbone import H2Settings, RequestReceived
from ztunnel.identity.manager import WorkloadCertificate, new_csr
from ztunnel.metrics import Metrics, Peer, tcp_labels
from ztunnel.proxy.hbone import HboneConnection, StreamSide
from ztunnel.proxy.pool import HbonePool, PoolKey
from ztunnel.proxy.relay import TcpSide, Tunnel
from ztunnel.tls import PeerIdentityError, TlsContexts, peer_identity

TD = "cluster.local"
CLIENT_ID = "spiffe://cluster.local/ns/a/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/b/sa/server"
LOOPBACK = "127.0.0.1"
CLOSE_TIMEOUT = 5.0
SOCKET_BUFFER = 128 * 1024
"""Kernel buffer size of every plain TCP socket here. Loopback autotuning would otherwise let megabytes
hide in the kernel, and a stalled reader would not stall the HTTP/2 windows behind it: with small
kernel buffers it is ztunnel's flow control that holds bytes back, which is what the tests are about."""


def small_buffers(sock: socket.socket | TransportSocket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


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
    """Yield to the loop until `condition()` holds; fail naming `what` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


class _Node:
    """What both proxies keep: tunnels (the registry `Tunnel` needs), metrics, set-up tasks, connections."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.tunnels: set[Tunnel] = set()
        self.connections: list[HboneConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_all(self) -> None:
        """Reset what is still open and wait until every socket reported its end (no unclosed transports)."""
        for tunnel in list(self.tunnels):
            for side in (tunnel.downstream, tunnel.upstream):
                if side is not None:
                    side.abort()
        for conn in self.connections:
            if conn.transport is not None and not conn.lost:
                conn.transport.abort()
        await wait_until(lambda: not self.tunnels and all(c.lost for c in self.connections), "sockets to close")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class DestinationNode(_Node):
    """The server's ztunnel on 15008: mTLS, the client's identity, each CONNECT connected to the app."""

    def __init__(self, cert: WorkloadCertificate, settings: H2Settings | None = None) -> None:
        super().__init__()
        self.cert = cert
        self.settings = settings
        """What its connections advertise (the default: 100 concurrent streams each)."""
        self.refused_ports: set[int] = set()
        """CONNECTs to these ports are answered 401, as when a policy denies them."""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> DestinationNode:
        loop = asyncio.get_running_loop()
        context = TlsContexts().server(self.cert)
        self._server = await loop.create_server(
            lambda: _InboundHbone(self), LOOPBACK, 0, ssl=context, ssl_handshake_timeout=CLOSE_TIMEOUT
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._close_all()

    def request(self, conn: HboneConnection, ev: RequestReceived) -> None:
        # As inbound.py: the stream is tracked at once so data arriving before the answer is kept.
        tunnel = Tunnel("inbound", self.metrics, self.tunnels, f"{conn.peer_identity} -> {ev.authority}")
        side = conn.accept(ev.stream_id, tunnel)
        tunnel.downstream = side
        self.spawn(self._serve(conn, side, tunnel, ev.authority))

    async def _serve(self, conn: HboneConnection, side: StreamSide, tunnel: Tunnel, authority: str) -> None:
        host, _, port_text = authority.rpartition(":")
        port = int(port_text)
        if port in self.refused_ports:
            conn.respond(side.stream_id, 401)
            return
        try:
            sock = await connected_socket(host, port)
        except OSError:
            conn.respond(side.stream_id, 503)
            return
        _, upstream = await asyncio.get_running_loop().create_connection(lambda: TcpSide(tunnel), sock=sock)
        if side.closed:
            upstream.abort()
            return
        conn.respond(side.stream_id, 200)
        source, destination = Peer(principal=conn.peer_identity), Peer(principal=self.cert.spiffe_id)
        tunnel.established(upstream, tcp_labels("destination", source, destination, None, True))


async def connected_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket connected to `host:port`, as `sockets.connect` opens one (minus the netns)."""
    sock = socket.socket()
    try:
        small_buffers(sock)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _InboundHbone(HboneConnection):
    """One 15008 connection: the client's certificate must carry a workload identity of the trust domain."""

    def __init__(self, node: DestinationNode) -> None:
        super().__init__(client=False, on_request=node.request, settings=node.settings)
        self.node = node

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            self.peer_identity = peer_identity(transport.get_extra_info("ssl_object"), TD)
        except ssl.SSLError:
            transport.abort()  # type: ignore[attr-defined]
            return
        self.node.connections.append(self)
        super().connection_made(transport)


class SourceNode(_Node):
    """The client's ztunnel: outbound listeners whose connections become streams of pooled HBONE."""

    def __init__(self, cert: WorkloadCertificate, hbone_port: int, expected_identity: str = SERVER_ID) -> None:
        super().__init__()
        self.cert = cert
        self.hbone_port = hbone_port
        self.expected_identity = expected_identity
        self.pool = HbonePool(TD)
        self.key: PoolKey = (cert.spiffe_id, LOOPBACK, LOOPBACK, expected_identity)
        self.statuses: list[int] = []
        """Answers to CONNECTs that were not 200."""
        self.errors: list[BaseException] = []
        """Why tunnels could not be set up (dial, handshake, identity)."""
        self._context = TlsContexts().client(cert)
        self._listeners: list[asyncio.Server] = []

    async def listen(self, authority: str) -> int:
        """A listener (the pod's 15001 for one destination) tunnelling every connection to `authority`."""
        server = await asyncio.get_running_loop().create_server(lambda: _Captured(self, authority), LOOPBACK, 0)
        for sock in server.sockets:
            small_buffers(sock)  # inherited by accepted sockets
        self._listeners.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        for server in self._listeners:
            server.close()
            await server.wait_closed()
        self.pool.close()
        await self._close_all()

    async def dial(self) -> HboneConnection:
        """A new mTLS connection to the destination's 15008, which must prove the expected identity."""
        transport, conn = await asyncio.get_running_loop().create_connection(
            lambda: HboneConnection(client=True),
            LOOPBACK,
            self.hbone_port,
            ssl=self._context,
            server_hostname="",
            ssl_handshake_timeout=CLOSE_TIMEOUT,
        )
        try:
            conn.peer_identity = peer_identity(transport.get_extra_info("ssl_object"), TD)
            if conn.peer_identity != self.expected_identity:
                raise PeerIdentityError(f"15008 is {conn.peer_identity}, expected {self.expected_identity}")
        except BaseException:
            transport.abort()
            raise
        self.connections.append(conn)
        return conn

    async def tunnel(self, tunnel: Tunnel, authority: str) -> None:
        """As outbound.py: a stream on the pooled connection, its answer awaited, then relaying."""
        try:
            conn = await self.pool.get(self.key, self.dial)
            side, response = conn.open(authority, tunnel, [("forwarded", f"for={LOOPBACK}")])
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    status = await response
            except BaseException:
                side.abort()
                raise
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self.errors.append(exc)
            tunnel.fail()
            return
        if status != 200:
            self.statuses.append(status)
            side.abort()
            tunnel.fail()
            return
        source, destination = Peer(principal=self.cert.spiffe_id), Peer(principal=conn.peer_identity)
        tunnel.established(side, tcp_labels("source", source, destination, None, True))


class _Captured(TcpSide):
    """A connection accepted on an outbound listener: the downstream side of its tunnel."""

    def __init__(self, node: SourceNode, authority: str) -> None:
        super().__init__(Tunnel("outbound", node.metrics, node.tunnels, f"-> {authority}"))
        self.tunnel.downstream = self
        self.node = node
        self.authority = authority

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.node.spawn(self.node.tunnel(self.tunnel, self.authority))


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


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A client app's connection to `port`, closed on the way out whatever happened to it."""
    reader, writer = await asyncio.open_connection(sock=await connected_socket(LOOPBACK, port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def held_by_ztunnel(*nodes: _Node) -> int:
    """Bytes the proxies hold in user space on their way somewhere: the write buffers of their sockets
    and TLS connections, and what streams keep while a flow-control window is closed (read from the
    sides' private lists: nothing else shows it)."""
    total = 0
    for node in nodes:
        total += sum(c.transport.get_write_buffer_size() for c in node.connections if c.transport and not c.lost)
        for tunnel in node.tunnels:
            for side in (tunnel.downstream, tunnel.upstream):
                if isinstance(side, TcpSide) and side.transport is not None and not side.closed:
                    total += side.transport.get_write_buffer_size() + sum(map(len, side._early))
                elif isinstance(side, StreamSide):
                    total += sum(len(b) for b in (*side._pending, *side._early))
    return total


def send_window_closed(node: _Node) -> bool:
    """Whether a stream of `node` has used up its HTTP/2 send window: it can send nothing more until the
    peer's WINDOW_UPDATE."""
    return any(
        isinstance(side, StreamSide) and not side.closed and side.conn.h2.send_window(side.stream_id) == 0
        for tunnel in node.tunnels
        for side in (tunnel.downstream, tunnel.upstream)
    )


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as an app that crashes or aborts its connection does."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
