"""One real ztunnel serving one pod on loopback, and HBONE clients for it: well-behaved and not.

`ServedNode` runs what production runs for a pod's 15008 (`ProxyContext`, `PodServing`, `InboundHbone`),
with the pod's listeners on ephemeral ports of 127.0.0.1, this process' own netns standing in for the
pod's, and the pod's certificate handed to the identity manager as if control had issued it. Opening
sockets in a netns, marking them and binding the caller's address (IP_TRANSPARENT) need root, as they do
for ztunnel. Clients bind 127.0.0.x source addresses, so each can be a different peer by IP as well.

`RawHbone` writes HTTP/2 frames by hand: it is the peer that ignores SETTINGS_MAX_CONCURRENT_STREAMS,
never sends a preface, or breaks the protocol. `dial` is a well-behaved client (ztunnel's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from pathlib import Path

from hpack import Decoder, Encoder

from meshlet_contracts.zds import WorkloadInfo
from tests.integration.ztunnel.nodes import LOOPBACK, SERVER_ID, wait_until
from ztunnel.config.client import NodeCredential
from ztunnel.hbone import frames as fr
from ztunnel.identity.manager import IdentityManager, WorkloadCertificate
from ztunnel.inpod.listeners import PodListeners
from ztunnel.metrics import Metrics
from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.hbone import HboneConnection
from ztunnel.proxy.limits import HboneLimits
from ztunnel.proxy.relay import Tunnel
from ztunnel.proxy.serving import PodServing
from ztunnel.tls import TlsContexts

POD_UID = "uid-server"
POD = WorkloadInfo("server", "b", "server", (LOOPBACK,))
"""The served pod: namespace b, service account server, so its identity is SERVER_ID."""
HANDSHAKE_TIMEOUT = 5.0


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class ServedNode:
    """ztunnel's data path for one pod whose 15008 listens on `port`."""

    def __init__(self, cert: WorkloadCertificate, limits: HboneLimits | None = None) -> None:
        assert cert.spiffe_id == SERVER_ID
        self.ctx = ProxyContext(
            node="node-1",
            trust_domain="cluster.local",
            root_namespace="meshlet-system",
            # Never called: the pod's certificate is in hand already.
            identities=IdentityManager("https://127.0.0.1:9", NodeCredential.in_dir(Path("/nonexistent"))),
            limits=limits or HboneLimits(),
        )
        self.ctx.identities.certs[cert.spiffe_id] = cert
        self.ctx.config_loaded.set()  # an empty mesh config: no policy, so every caller is allowed
        self.serving = PodServing(self.ctx)
        self.port = 0
        self._netns = -1

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    def errors(self, reason: str) -> int:
        """meshlet_connection_errors_total{direction="inbound",reason=...}"""
        return self.ctx.metrics.errors.get(("inbound", reason), 0)

    @property
    def pod(self) -> ServedPod:
        return self.ctx.pods[POD_UID]

    async def start(self) -> ServedNode:
        self._netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        listeners = PodListeners(self._netns, {n: _listener() for n in ("outbound", "inbound_plaintext", "hbone")})
        self.port = listeners.sockets["hbone"].getsockname()[1]
        self.serving.pod_added(POD_UID, POD, listeners)
        await wait_until(lambda: self.pod.hbone_ready, "the pod's 15008 to be served")
        return self

    async def close(self) -> None:
        self.serving.pod_removed(POD_UID)
        for tunnel in list(self.ctx.tunnels):
            tunnel.fail()
            if tunnel.upstream is not None:
                tunnel.upstream.abort()
        await wait_until(lambda: not self.ctx.tunnels, "the node's tunnels to end")
        for task in list(self.ctx.tasks):
            task.cancel()
        await asyncio.gather(*self.ctx.tasks, return_exceptions=True)
        if self._netns >= 0:
            os.close(self._netns)


async def _connected(port: int, source_ip: str) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setblocking(False)
        sock.bind((source_ip, 0))
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def dial(cert: WorkloadCertificate, port: int, source_ip: str) -> HboneConnection:
    """A well-behaved HBONE client connection from `source_ip` with `cert`'s identity."""
    _, conn = await asyncio.get_running_loop().create_connection(
        lambda: HboneConnection(client=True),
        sock=await _connected(port, source_ip),
        ssl=TlsContexts().client(cert),
        server_hostname="",
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
    )
    return conn


async def connect_status(conn: HboneConnection, authority: str) -> int:
    """Open a tunnel on `conn` and return the answer's status (the stream stays open when it is 200);
    raises ConnectionResetError when the stream was reset instead."""
    _, response = conn.open(authority, Tunnel("outbound", Metrics(), set(), authority), [])
    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
        return await response


class RawHbone:
    """An mTLS connection to 15008 speaking HTTP/2 by hand; what the server answers is recorded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.statuses: dict[int, int] = {}
        """Stream id -> the response's :status."""
        self.resets: dict[int, int] = {}
        """Stream id -> the RST_STREAM error code."""
        self.goaways: list[int] = []
        """Error codes of the GOAWAYs received."""
        self.closed = False
        """The server closed or reset the connection."""
        self._spoken = False  # nothing is sent, not even a SETTINGS ACK, before `preface()`
        self._settings_seen = False
        self._encoder, self._decoder = Encoder(), Decoder()
        self._frames = fr.FrameReader(fr.MAX_MAX_FRAME_SIZE, expect_preface=False)
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, cert: WorkloadCertificate, port: int, source_ip: str) -> RawHbone:
        reader, writer = await asyncio.open_connection(
            sock=await _connected(port, source_ip),
            ssl=TlsContexts().client(cert),
            server_hostname="",
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
        return cls(reader, writer)

    def preface(self) -> None:
        self.writer.write(fr.PREFACE + fr.settings_frame([]))
        if not self._spoken and self._settings_seen:
            self.writer.write(fr.SETTINGS_ACK_FRAME)
        self._spoken = True

    def request(self, stream_ids: range, authority: str) -> None:
        """CONNECT on each stream id, whatever the server's limit."""
        fields = [(":method", "CONNECT"), (":authority", authority)]
        for sid in stream_ids:
            self.writer.write(b"".join(fr.headers_frames(sid, self._encoder.encode(fields), 16384, False)))

    def send(self, raw: bytes) -> None:
        self.writer.write(raw)

    @property
    def answered(self) -> int:
        return len(self.statuses) + len(self.resets)

    async def close(self) -> None:
        self.writer.transport.abort()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for frame_type, flags, stream_id, payload in self._frames.feed(data):
                    if frame_type == fr.SETTINGS and not flags & fr.FLAG_ACK:
                        self._settings_seen = True
                        if self._spoken:
                            self.writer.write(fr.SETTINGS_ACK_FRAME)
                    elif frame_type == fr.HEADERS:
                        fields = self._decoder.decode(bytes(payload))
                        self.statuses[stream_id] = next(int(v) for k, v in fields if k in (":status", b":status"))
                    elif frame_type == fr.RST_STREAM:
                        self.resets[stream_id] = fr.parse_u32(payload, "RST_STREAM")
                    elif frame_type == fr.GOAWAY:
                        self.goaways.append(fr.parse_goaway(payload)[1])
        except (OSError, ssl.SSLError):
            pass  # a reset is a close too
        finally:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.transport.abort()
