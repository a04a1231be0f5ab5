"""The config stream: one WebSocket per node proxy, a snapshot on connect, then deltas, acked or nacked.

Each proxy has its own sender task that sends the difference between what that proxy last got and the
current state, whenever the store has a new version. A proxy that rejects a version keeps its older one,
so its next update is a whole snapshot rather than a delta it could not apply. Versions a slow proxy has
not yet been sent are coalesced into one delta, so the store never queues per client and one slow or
dead proxy never delays the others; a proxy that cannot take a message within `send_timeout` is
disconnected (it reconnects and gets a fresh snapshot).

On shutdown (`close`) the hub stops pushing at once, refuses new streams (503), and closes every stream
with 1001 (going away), bounded by `CLOSE_TIMEOUT`: control's exit never waits on a proxy, and a proxy
sees a clean end and retries until a control answers again (with a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web

from control.metrics import ControlMetrics
from control.model.mesh import MeshState, diff
from control.store import ConfigStore
from meshlet_contracts import wire
from meshlet_contracts.mesh_config import MESH_KEY, ROOT_NAMESPACE, MeshConfigError, mesh_item, parse_mesh

log = logging.getLogger(__name__)
CLOSE_TIMEOUT = 0.5
"""Seconds a proxy has to answer our close frame on shutdown before its connection is aborted."""


@dataclass(slots=True, eq=False)  # compared and hashed by identity: one per connection
class ProxyConnection:
    """One connected proxy and where its view of the config stands."""

    node: str
    peer: str
    connected_at: float = field(default_factory=time.time)
    sent_version: int = 0
    acked_version: int = 0
    last_error: str | None = None
    """The error of the proxy's last nack, cleared by its next ack."""
    root_namespaces: tuple[str, ...] | None = None
    """The root namespaces its last ack said it applies (None: it did not say: a ztunnel before 2026-11-29, which
    ignores ours and applies its own --root-namespace)."""
    needs_snapshot: bool = False
    """After a nack the proxy holds an older version than we sent: its next update is a full snapshot."""
    snapshot_now: bool = False
    """A nack of a version older than the newest sent: the newer one was built on what the proxy lacks,
    so the current version goes to it whole, right away."""
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    ws: web.WebSocketResponse | None = None
    sender: asyncio.Task[None] | None = None
    abort: Callable[[], None] | None = None

    def status(self) -> dict[str, object]:
        return {
            "node": self.node,
            "peer": self.peer,
            "connectedAt": self.connected_at,
            "sentVersion": self.sent_version,
            "ackedVersion": self.acked_version,
            "lastError": self.last_error,
            "rootNamespaces": None if self.root_namespaces is None else list(self.root_namespaces),
        }


class ConfigHub:
    """All proxy connections; wakes their senders when the store has a new version."""

    def __init__(self, store: ConfigStore, metrics: ControlMetrics, send_timeout: float = 10.0) -> None:
        self.store = store
        self.metrics = metrics
        self.send_timeout = send_timeout
        self.connections: set[ProxyConnection] = set()
        self.mesh = mesh_item(store.settings.root_namespaces)
        """The `mesh` object of every message: a few bytes, so a proxy never depends on having seen an earlier one."""
        self.closing = False
        """Set by `close`: no more pushes, no new streams."""
        store.subscribe(self._wake)

    def _wake(self) -> None:
        for conn in self.connections:
            conn.dirty.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        node: str = request["node"]
        if self.closing:  # the listener closes next: the proxy retries and finds the next control
            return web.json_response({"error": "control is stopping", "reason": "stopping"}, status=503)
        ws = web.WebSocketResponse(heartbeat=15.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = ProxyConnection(node=node, peer=str(request.remote), ws=ws)
        self.connections.add(conn)
        self.metrics.connected_proxies.set(len(self.connections))
        log.info("proxy of node %s connected from %s", node, conn.peer)
        # uvloop's transports are not asyncio.Transport subclasses: take the abort method itself.
        conn.abort = abort = getattr(request.transport, "abort", None)
        conn.sender = sender = asyncio.create_task(self._send_loop(conn, ws, abort), name=f"config-sender-{node}")
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                self._on_reply(conn, msg.data)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self.connections.discard(conn)
            self.metrics.connected_proxies.set(len(self.connections))
            log.info("proxy of node %s disconnected", node)
        return ws

    def _on_reply(self, conn: ProxyConnection, text: str) -> None:
        try:
            message = wire.decode(text)
        except wire.WireError as exc:
            log.warning("proxy of node %s sent an invalid message: %s", conn.node, exc)
            return
        if message["type"] == "ack":
            conn.acked_version = message["version"]
            conn.last_error = None
            try:
                conn.root_namespaces = parse_mesh(message[MESH_KEY]) if MESH_KEY in message else None
            except MeshConfigError:
                conn.root_namespaces = None
            self.metrics.acks.inc()
        elif message["type"] == "nack":
            conn.last_error = str(message["error"])
            # Not resent at once: the same version would be rejected again. The next version goes whole,
            # or the current one now when the proxy has already been sent a newer delta it cannot apply.
            conn.needs_snapshot = True
            if message["version"] != conn.sent_version:
                conn.snapshot_now = True
                conn.dirty.set()
            self.metrics.rejects.labels(conn.node).inc()
            log.error("proxy of node %s rejected version %s: %s", conn.node, message["version"], conn.last_error)

    async def _send_loop(
        self, conn: ProxyConnection, ws: web.WebSocketResponse, abort: Callable[[], None] | None = None
    ) -> None:
        sent: MeshState = {}
        try:
            while True:
                state, version = self.store.state, self.store.version
                if not sent or conn.snapshot_now or (conn.needs_snapshot and version != conn.sent_version):
                    conn.needs_snapshot = conn.snapshot_now = False
                    message = {
                        "type": "snapshot",
                        "epoch": self.store.epoch,
                        "version": version,
                        "resources": {c: list(items.values()) for c, items in state.items()},
                        MESH_KEY: self.mesh,
                    }
                elif version != conn.sent_version:
                    upsert, remove = diff(sent, state)
                    message = {
                        "type": "delta",
                        "epoch": self.store.epoch,
                        "version": version,
                        "base": conn.sent_version,
                        "upsert": {c: list(items.values()) for c, items in upsert.items()},
                        "remove": remove,
                        MESH_KEY: self.mesh,
                    }
                else:
                    conn.dirty.clear()
                    await conn.dirty.wait()
                    continue
                try:
                    await asyncio.wait_for(ws.send_str(wire.encode(message)), self.send_timeout)
                except TimeoutError:
                    self.metrics.slow_disconnects.inc()
                    log.warning("proxy of node %s did not read for %ss: disconnecting", conn.node, self.send_timeout)
                    # A graceful close would wait for the very buffer the proxy is not reading: abort, so
                    # the socket and its buffered data go now and the proxy sees a reset and reconnects.
                    if abort is not None:
                        abort()
                    else:
                        await ws.close()
                    return
                self.metrics.pushes.labels(message["type"]).inc()
                sent, conn.sent_version = state, version
        except ConnectionResetError:
            await ws.close()

    async def close(self) -> None:
        """Stop pushing and end every stream (1001, going away), within about `CLOSE_TIMEOUT`; idempotent."""
        if self.closing:
            return
        self.closing = True
        conns = list(self.connections)
        for conn in conns:  # first, so that no message starts while the streams close
            if conn.sender is not None:
                conn.sender.cancel()
        log.info("stopped pushing config; closing %d config streams", len(conns))
        await asyncio.gather(*(self._close_one(conn) for conn in conns))

    @staticmethod
    async def _close_one(conn: ProxyConnection) -> None:
        if conn.ws is None:
            return
        try:
            await asyncio.wait_for(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"control is stopping"),
                                   CLOSE_TIMEOUT)  # fmt: skip
        except (TimeoutError, ConnectionError):
            # A proxy that does not read its socket (or whose send buffer is full) would hold control's exit:
            # drop the connection; the proxy sees a reset and retries like after any other outage.
            if conn.abort is not None:
                conn.abort()

    def status(self) -> list[dict[str, object]]:
        return sorted((c.status() for c in self.connections), key=lambda s: str(s["node"]))

    def root_warnings(self) -> list[dict[str, str]]:
        """A warning for each proxy that applies other root namespaces than ours: its mesh-wide policies are not
        the mesh's. One that does not say (older than the field) counts where ours are not the default, which is
        all it can apply."""
        ours = self.store.settings.root_namespaces
        out = []
        for conn in sorted(self.connections, key=lambda c: c.node):
            held = conn.root_namespaces
            if conn.acked_version == 0 or held == ours or (held is None and ours == (ROOT_NAMESPACE,)):
                continue
            said = f"applies {', '.join(held)}" if held else "does not apply the root namespaces control sends"
            out.append({
                "code": "proxy-roots-differ", "object": f"ztunnel of node {conn.node}",
                "message": f"it {said}, not {', '.join(ours)}: mesh-wide policies of the others do not apply to "
                           "its pods; upgrade it (ztunnels before 2026-11-29 use their --root-namespace)",
            })  # fmt: skip
        return out
