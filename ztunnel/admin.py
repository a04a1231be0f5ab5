"""ztunnel's own HTTP endpoints, in the node's netns: admin (15000, localhost only), metrics, readiness.

- 15000 `/config_dump`: what this proxy holds (workloads, services, HTTP routes, policies, certificates with expiry,
  served pods with their listener state, open connections, pooled HBONE connections), and
  `/quitquitquit` (POST): drain and exit, as Envoy and Istio's ztunnel offer;
  `/logging?access=on|off` (POST): switch the JSON access log (`ztunnel.observe.accesslog`) at runtime.
- 15020 `/metrics` (also `/stats/prometheus`): Prometheus text.
- 15021 `/healthz/ready`: 200 once config and the agent's pod snapshot have arrived, 503 while draining.
These run on the same loop as the data path but do no blocking work: each reply is built from memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshlet_contracts import build, log_levels, ports
from meshlet_contracts.supervision import Supervisor
from ztunnel.config.client import ConfigClient
from ztunnel.identity import chain
from ztunnel.inpod.client import ZdsClient
from ztunnel.observe.accesslog import ACCESS_LOG
from ztunnel.proxy.context import ProxyContext

log = logging.getLogger(__name__)


class Admin:
    """Builds the three apps over one proxy's state."""

    def __init__(self, ctx: ProxyContext, config: ConfigClient, zds: ZdsClient, shutdown: Callable[[], None]) -> None:
        self.ctx = ctx
        self.config = config
        self.zds = zds
        self.shutdown = shutdown
        self.started = datetime.now(UTC)
        self.supervisor: Supervisor | None = None
        """ztunnel's long-lived tasks: one that is down (restarting) makes the proxy unready."""
        self._export_node_metrics()

    def _export_node_metrics(self) -> None:
        """The proxy-wide values /metrics shows besides the per-connection counters, read at each scrape."""
        ctx, m = self.ctx, self.ctx.metrics
        m.gauge("meshlet_ztunnel_open_connections", "Connections being relayed now.", lambda: len(ctx.tunnels))
        m.gauge("meshlet_ztunnel_served_pods", "Pods whose traffic this proxy serves.", lambda: len(ctx.pods))
        m.gauge(
            "meshlet_ztunnel_config_version",
            "Version of the config held from control (0 before the first).",
            lambda: self.config.state.version,
        )
        m.counter(
            "meshlet_ztunnel_hbone_handshakes_total",
            "HBONE connections (each one mTLS handshake) this proxy opened to other nodes.",
            lambda: ctx.pool.handshakes if ctx.pool else 0,
        )
        m.counter(
            "meshlet_ztunnel_http_upstream_reused_total",
            "HTTP requests sent on a kept-alive upstream connection (no new HBONE stream or TCP connect).",
            lambda: ctx.http_upstreams.reused,
        )
        m.gauge(
            "meshlet_ztunnel_http_upstream_idle",
            "Upstream HTTP connections kept alive now, waiting for a request.",
            lambda: ctx.http_upstreams.idle_count(),
        )
        m.counter(
            "meshlet_ztunnel_zds_failed_messages_total",
            "Messages from the agent (ZDS) that could not be applied.",
            lambda: self.zds.errors,
        )

    @property
    def ready(self) -> bool:
        return (
            self.config.state.version > 0
            and self.zds.manager.snapshots > 0
            and not self.ctx.draining
            and not (self.supervisor and self.supervisor.down())
        )

    def problems(self) -> list[str]:
        out = []
        if self.config.state.version == 0:
            out.append(f"no config from control yet ({self.config.last_error or 'connecting'})")
        if self.zds.manager.snapshots == 0:
            out.append(f"no pod snapshot from the agent yet ({self.zds.path})")
        if self.ctx.draining:
            out.append("draining")
        for t in self.supervisor.down() if self.supervisor else []:
            out.append(f"task {t.name} is down, restarting ({t.last_error})")
        return out

    def config_dump(self) -> dict[str, Any]:
        ctx, state = self.ctx, self.config.state
        index = ctx.index
        certs = []
        for entry in ctx.identities.status():
            cert = ctx.identities.certs.get(str(entry["identity"]))
            certs.append({**entry, "notBefore": cert.not_before.isoformat() if cert else None,
                          "chain": chain.describe(cert) if cert else []})  # fmt: skip
        return {
            "node": ctx.node,
            "build": build.build(),
            "rootNamespaces": list(index.root_namespaces),
            "rootNamespacesFrom": "control" if state.root_namespaces else "--root-namespace",
            "rootNamespace": index.root_namespaces[0],  # what CLIs before 2026-11-29 read
            "startedAt": self.started.isoformat(),
            "ready": self.ready,
            "problems": self.problems(),
            "config": {
                "epoch": state.epoch,
                "version": state.version,
                "connected": self.config.connected,
                "lastError": self.config.last_error,
                "url": self.config.url,
                "updatedAt": self.config.updated_at,
                "source": ctx.config_source,
            },
            "traffic": self.traffic(),
            "tasks": self.supervisor.status() if self.supervisor else [],
            "zds": {
                "connected": self.zds.connected,
                "pid": self.zds.identity.pid,
                "supersededBy": self.zds.superseded_by,
                "socket": str(self.zds.path),
                "failedMessages": self.zds.errors,
                "lastError": self.zds.last_error,
            },
            "workloads": [_workload(w) for w in sorted(index.workloads.values(), key=lambda w: (w.namespace, w.name))],
            "services": [dict(s) for s in state.items("services").values()],
            "routes": [dict(r) for r in state.items("http_routes").values()],
            "policies": {
                "authorization": [dict(p) for p in state.items("authorization_policies").values()],
                "peerAuthentication": [dict(p) for p in state.items("peer_authentications").values()],
                "traffic": [dict(p) for p in state.items("traffic_policies").values()],
            },
            "certificates": certs,
            "pods": [
                {
                    "uid": p.uid,
                    "name": p.name,
                    "namespace": p.namespace,
                    "identity": p.identity,
                    "ips": list(p.ips),
                    "listeners": {
                        "outbound": {"port": ports.OUTBOUND, "accepting": len(p.servers) >= 1},
                        "inbound_plaintext": {"port": ports.INBOUND_PLAINTEXT, "accepting": len(p.servers) >= 2},
                        "hbone": {"port": ports.HBONE, "accepting": p.hbone_ready and bool(p.servers)},
                    },
                    "error": p.error,
                }
                for p in sorted(ctx.pods.values(), key=lambda p: (p.namespace, p.name))
            ],
            "connections": [t.status() for t in sorted(ctx.tunnels, key=lambda t: t.id)],
            "pool": ctx.pool.status() if ctx.pool is not None else [],
        }

    def traffic(self) -> dict[str, Any]:
        """Open connections, and bytes of closed ones by reporter (source: this node's pods calling out)."""
        m = self.ctx.metrics
        out: dict[str, Any] = {"openConnections": len(self.ctx.tunnels)}
        for reporter in ("source", "destination"):
            out[reporter] = {
                "connections": sum(v for k, v in m.closed.items() if k[0] == reporter),
                "sentBytes": sum(v for k, v in m.sent.items() if k[0] == reporter),
                "receivedBytes": sum(v for k, v in m.received.items() if k[0] == reporter),
            }
        out["errors"] = sum(m.errors.values())
        return out

    # ----- apps -----

    def admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/config_dump", self._config_dump)
        app.router.add_post("/quitquitquit", self._quit)
        app.router.add_post("/logging", self._logging)
        return app

    def metrics_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/stats/prometheus", self._metrics)
        return app

    def readiness_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz/ready", self._ready)
        return app

    async def _config_dump(self, _: web.Request) -> web.Response:
        return web.json_response(self.config_dump(), dumps=_dumps)

    async def _quit(self, _: web.Request) -> web.Response:
        asyncio.get_running_loop().call_soon(self.shutdown)
        return web.Response(text="draining\n")

    async def _logging(self, request: web.Request) -> web.Response:
        access, level = request.query.get("access"), request.query.get("level")
        if access not in ("on", "off", None):
            return web.Response(status=400, text=f"access={access!r}: expected on or off\n")
        if level is not None:
            try:
                log_levels.set_level(level)
            except log_levels.LevelError as exc:
                return web.Response(status=400, text=f"{exc}\n")
            log.warning("log level set to %s through the admin port", log_levels.current())
        if access is not None:
            ACCESS_LOG.set(access == "on")
        access_now = "on" if ACCESS_LOG.enabled else "off"
        return web.Response(text=f"level: {log_levels.current()}\naccess: {access_now}\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.ctx.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _ready(self, _: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="; ".join(self.problems()) + "\n")


def _workload(w: Any) -> dict[str, Any]:
    d = asdict(w)
    d["labels"] = dict(w.labels)
    return d


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
