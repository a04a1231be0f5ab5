"""Real ztunnels, each serving one pod on loopback, and HBONE clients for them: well-behaved and not.

`ServedNode` runs what production runs for a pod (`ProxyContext`, `PodServing`, and so `Outbound`,
`InboundHbone`, `InboundPlaintext`, the HBONE pool), with the pod's listeners on ephemeral ports of
127.0.0.1, the loopback socket factory (`loopback.LoopbackSockets`) in place of the netns one, and the
pod's certificate handed to the identity manager as if control had issued it. Two nodes sharing one
factory carry a client app's connection through the whole path: the source node's 15001, an HBONE
stream over mTLS to the destination node's 15008, the destination's app. Their mesh config (`mesh`) is
built with control's own model: the client pod (namespace a, 127.0.0.2) and the server pod (namespace b,
127.0.0.1), both enrolled; a DENY policy refuses the ports a test names.

`RawHbone` writes HTTP/2 frames by hand: it is the peer that ignores SETTINGS_MAX_CONCURRENT_STREAMS,
never sends a preface, or breaks the protocol. `dial` is a well-behaved client (ztunnel's own). Clients
bind 127.0.0.x source addresses, so each can be a different peer by IP as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hpack import Decoder, Encoder

from control.model.kube import Namespace, Pod
from control.model.mesh import MeshSettings, workload_item
from control.model.security import AuthorizationPolicy
from meshlet_contracts.ports import HBONE
from meshlet_contracts.zds import WorkloadInfo
from tests.integration.ztunnel.loopback import (
    CLIENT_IP,
    LOOPBACK,
    LoopbackSockets,
    small_buffers,
    wait_until,
)
from ztunnel.config.client import NodeCredential
from ztunnel.config.state import ConfigState, apply
from ztunnel.hbone import frames as fr
from ztunnel.identity.manager import IdentityManager, WorkloadCertificate
from ztunnel.inpod.listeners import PodListeners
from ztunnel.metrics import Metrics
from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.hbone import HboneConnection, StreamSide
from ztunnel.proxy.limits import HboneLimits
from ztunnel.proxy.relay import TcpSide, Tunnel
from ztunnel.proxy.serving import PodServing
from ztunnel.state.mesh import MeshIndex
from ztunnel.tls import TlsContexts

POD = WorkloadInfo("server", "b", "server", (LOOPBACK,))
"""The served pod of the destination node: namespace b, service account server, so its identity is SERVER_ID."""
CLIENT_POD = WorkloadInfo("client", "a", "client", (CLIENT_IP,))
"""The served pod of the source node: its identity is CLIENT_ID."""
POD_UID = "uid-server"
HANDSHAKE_TIMEOUT = 5.0
AMBIENT = (("meshlet.io/dataplane-mode", "ambient"),)


def mesh(
    deny_ports: Iterable[int] = (), policies: Iterable[dict[str, Any]] = (), without: Iterable[WorkloadInfo] = ()
) -> MeshIndex:
    """The mesh config both nodes hold: both pods, enrolled (but those named in `without`: control has not seen them
    yet); a DENY policy on the server for `deny_ports`, and `policies` (AuthorizationPolicy objects as a user writes
    them)."""
    pods = [p for p in (POD, CLIENT_POD) if p not in set(without)]
    items = [workload_item(_pod(p), Namespace(p.namespace, AMBIENT), MeshSettings()) for p in pods]
    resources: dict[str, list[Any]] = {"workloads": items}
    resources["authorization_policies"] = [AuthorizationPolicy.from_k8s(p).to_wire() for p in policies]
    ports = [str(p) for p in deny_ports]
    if ports:
        policy = AuthorizationPolicy.from_k8s(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "deny-ports", "namespace": POD.namespace},
                "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ports}}]}]},
            }
        )
        resources["authorization_policies"].append(policy.to_wire())
    message = {"type": "snapshot", "epoch": "e1", "version": 1, "resources": resources}
    return MeshIndex.from_config(apply(ConfigState(), message))


def _pod(info: WorkloadInfo) -> Pod:
    return Pod(
        uid=f"uid-{info.name}",
        name=info.name,
        namespace=info.namespace,
        node=f"node-{info.name}",
        service_account=info.service_account,
        ips=info.ips,
        labels=(("app", info.name),),
        host_network=False,
        phase="Running",
        ready=True,
        container_ports=(),
    )


def _listener() -> socket.socket:
    sock = socket.socket()
    small_buffers(sock)  # inherited by accepted sockets
    sock.bind((LOOPBACK, 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class ServedNode:
    """ztunnel's data path for one pod: its 15008 listens on `port`, its 15001 on `outbound_port`."""

    def __init__(
        self,
        cert: WorkloadCertificate,
        limits: HboneLimits | None = None,
        pod: WorkloadInfo = POD,
        sockets: LoopbackSockets | None = None,
    ) -> None:
        self.info = pod
        self.uid = f"uid-{pod.name}"
        self.sockets = sockets if sockets is not None else LoopbackSockets()
        self.ctx = ProxyContext(
            node=f"node-{pod.name}",
            trust_domain="cluster.local",
            # Never called: the pod's certificate is in hand already.
            identities=IdentityManager("https://127.0.0.1:9", NodeCredential.in_dir(Path("/nonexistent"))),
            limits=limits or HboneLimits(),
            sockets=self.sockets,
        )
        self.ctx.identities.certs[cert.spiffe_id] = cert
        self.ctx.index = mesh()
        self.ctx.config_loaded.set()  # no policy, so every caller is allowed
        self.serving = PodServing(self.ctx)
        self.port = 0
        self.outbound_port = 0
        self.plaintext_port = 0
        """Its 15006: plaintext into the pod, the original destination from `LoopbackSockets.inbound_destination`."""
        self._netns = -1
        assert cert.spiffe_id == f"spiffe://cluster.local/ns/{pod.namespace}/sa/{pod.service_account}"

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    def errors(self, reason: str, direction: str = "inbound") -> int:
        """meshlet_connection_errors_total{direction=...,reason=...}"""
        return self.ctx.metrics.errors.get((direction, reason), 0)

    @property
    def pod(self) -> ServedPod:
        return self.ctx.pods[self.uid]

    async def start(self) -> ServedNode:
        self._netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # held, never entered
        listeners = PodListeners(self._netns, {n: _listener() for n in ("outbound", "inbound_plaintext", "hbone")})
        self.port = listeners.sockets["hbone"].getsockname()[1]
        self.outbound_port = listeners.sockets["outbound"].getsockname()[1]
        self.plaintext_port = listeners.sockets["inbound_plaintext"].getsockname()[1]
        for ip in self.info.ips:
            self.sockets.addresses[(ip, HBONE)] = (LOOPBACK, self.port)
        self.serving.pod_added(self.uid, self.info, listeners)
        await wait_until(lambda: self.pod.hbone_ready, "the pod's 15008 to be served")
        return self

    def captured(self, destination: str) -> contextlib.AbstractAsyncContextManager[
        tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ]:  # fmt: skip
        """A connection of this node's pod's app to `destination` ("ip:port"), as its 15001 captures it."""
        return self.sockets.captured(self.outbound_port, destination, self.info.ips[0])

    def pooled(self) -> list[HboneConnection]:
        """The HBONE client connections this node's pool holds."""
        assert self.ctx.pool is not None
        return [c for conns in self.ctx.pool.conns.values() for c in conns]

    @property
    def handshakes(self) -> int:
        """HBONE connections this node's pool has dialed."""
        assert self.ctx.pool is not None
        return self.ctx.pool.handshakes

    def hbone_connections(self) -> list[HboneConnection]:
        """The HBONE connections (client or server) carrying this node's tunnels now."""
        conns = {side.conn for side in self._sides() if isinstance(side, StreamSide)}
        return sorted(conns, key=id)

    def held(self) -> int:
        """Bytes this node holds in user space on their way somewhere: the write buffers of its sockets and TLS
        connections, and what streams keep while a flow-control window is closed (read from the sides'
        private lists: nothing else shows it)."""
        conns = set(self.hbone_connections()) | set(self.pooled())
        total = sum(c.transport.get_write_buffer_size() for c in conns if c.transport and not c.lost)
        for side in self._sides():
            if isinstance(side, TcpSide) and side.transport is not None and not side.closed:
                total += side.transport.get_write_buffer_size() + sum(map(len, side._early))
            elif isinstance(side, StreamSide):
                total += sum(len(b) for b in (*side._pending, *side._early))
        return total

    def send_window_closed(self) -> bool:
        """Whether a stream of this node has used up its HTTP/2 send window: it can send nothing more until
        the peer's WINDOW_UPDATE."""
        return any(
            isinstance(side, StreamSide) and not side.closed and side.conn.h2.send_window(side.stream_id) == 0
            for side in self._sides()
        )

    def _sides(self) -> list[object]:
        return [s for t in self.ctx.tunnels for s in (t.downstream, t.upstream) if s is not None]

    async def close(self) -> None:
        self.serving.pod_removed(self.uid)
        for tunnel in list(self.ctx.tunnels):
            tunnel.fail()
            if tunnel.upstream is not None:
                tunnel.upstream.abort()
        await wait_until(lambda: not self.ctx.tunnels, "the node's tunnels to end")
        self.ctx.http_upstreams.close()
        if self.ctx.pool is not None:
            self.ctx.pool.close()
            await wait_until(lambda: all(c.lost for c in self.pooled()), "the node's HBONE connections to close")
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
