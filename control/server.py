"""Control's two listeners and their wiring: HTTPS for nodes (15012), plain HTTP for operators (15014).

15012 asks every client for a certificate (TLS 1.3) and verifies it against the mesh root; the node
middleware then maps it to a provisioned node or answers 401 with the reason, before any handler runs. On
Kubernetes a client without a certificate may instead send its pod's ServiceAccount token (`Authorization:
Bearer`), which control/node_tokens.py maps to the pod's node; control then also publishes the mesh root as a
ConfigMap for the DaemonSet to mount (control/root_configmap.py).
15014 serves /healthz, /ready (store loaded, no long-lived task down), /metrics and /debug/status (version,
proxies, errors, mesh settings, warnings (control/advisor.py), tasks). The long-lived tasks (the file source's
watch, the serving certificate's renewal) run under a `Supervisor`: one that fails is restarted with backoff, and
/ready answers 503 naming it meanwhile. Stopping (`stop`, then each runner's cleanup) ends the config streams
first, so no push goes out after it, and gives requests in flight at most `SHUTDOWN_GRACE` seconds: control exits
in about a second whatever its nodes do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from urllib3.exceptions import HTTPError

from control.advisor import Advisor
from control.ca import CertificateAuthority
from control.ca_secret import NAME as CA_SECRET
from control.ca_secret import adopt
from control.certificates import CertificateService
from control.kube_client import load_client
from control.metrics import ControlMetrics
from control.node_tokens import NodeTokenAuthenticator
from control.nodes import NodeAuthError, NodeRegistry
from control.root_configmap import keep_published
from control.settings import ControlSettings
from control.sources.files import FileSource
from control.sources.kubernetes import KubeSource
from control.sources.reporting import KubeReporter
from control.store import ConfigStore
from control.stream import ConfigHub
from meshlet_contracts import build, wire
from meshlet_contracts.backoff import Backoff
from meshlet_contracts.supervision import Supervisor

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTROL_IDENTITY = "spiffe://{td}/ns/meshlet-system/sa/meshlet-control"


def load_ca(settings: ControlSettings) -> CertificateAuthority:
    td = settings.mesh.trust_domain
    if settings.ca_cert or settings.ca_key:
        if not (settings.ca_cert and settings.ca_key):
            raise ValueError("a plug-in CA needs both --ca-cert and --ca-key")
        return CertificateAuthority.from_files(settings.ca_cert, settings.ca_key, td, settings.ca_root)
    return CertificateAuthority.load_or_create(settings.state, td)


SERVING_TTL = timedelta(days=30)
SHUTDOWN_GRACE = 1.0
"""Seconds a request in flight (a CSR, a status page) may take to finish once control is stopping."""


def service_names(namespace: str) -> list[str]:
    """The names the serving certificate carries: the Service `meshlet-control` as pods in the cluster reach it."""
    return ["meshlet-control", f"meshlet-control.{namespace}.svc", f"meshlet-control.{namespace}.svc.cluster.local"]


def load_serving_cert(
    ctx: ssl.SSLContext, ca: CertificateAuthority, host: str, namespace: str = "meshlet-system"
) -> datetime:
    """Issue control's serving certificate and load it into `ctx` (new handshakes use it); returns its
    expiry. Loading into the live context is how it is renewed without a restart."""
    ips = [host] if _is_ip(host) and host not in ("0.0.0.0", "::") else []
    key_pem, issued = ca.issue_key_and_cert(
        CONTROL_IDENTITY.format(td=ca.trust_domain), SERVING_TTL, dns_names=[*service_names(namespace), "localhost"],
        ips=[*ips, "127.0.0.1"],
    )  # fmt: skip
    # ssl loads keys only from files: a private temporary directory, removed right after loading.
    with tempfile.TemporaryDirectory(prefix="meshlet-control-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text("".join(issued.chain_pem))
        key.touch(0o600)
        key.write_bytes(key_pem)
        ctx.load_cert_chain(cert, key)
    return issued.not_after


def server_tls(
    ca: CertificateAuthority, host: str, namespace: str = "meshlet-system"
) -> tuple[ssl.SSLContext, datetime]:
    """TLS 1.3 with a serving certificate from the CA; client certificates asked for, checked later."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    not_after = load_serving_cert(ctx, ca, host, namespace)
    ctx.load_verify_locations(cadata=ca.root_pem)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # so "no credential" gets a clear 401 rather than a TLS alert
    return ctx, not_after


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Control:
    """The control service: store + source, CA, node registry, config hub, certificate service."""

    def __init__(self, settings: ControlSettings) -> None:
        self.settings = settings
        self.metrics = ControlMetrics()
        self.ca = load_ca(settings)
        self.nodes = NodeRegistry(settings.state, self.ca)
        self.store = ConfigStore(settings.mesh, self.metrics)
        self.source: FileSource | KubeSource
        self.reporter: KubeReporter | None = None
        """With the kubernetes source: Events for rejected objects and HTTPRoute status, written back."""
        if settings.source == "kubernetes":
            load_client(settings.kubeconfig)  # a kubeconfig that does not work fails the start, with its reason
            self.source = KubeSource(lambda: load_client(settings.kubeconfig))
            self.reporter = KubeReporter(lambda: load_client(settings.kubeconfig), self.store, self.source)
        elif settings.store is None:
            raise ValueError("the file source needs --store DIR")
        else:
            self.source = FileSource(settings.store, settings.poll_interval)
        self.hub = ConfigHub(self.store, self.metrics, settings.send_timeout)
        self.advisor = Advisor(self.store, settings.mesh, self.metrics)
        self.certificates = CertificateService(self.ca, self.store, self.metrics, settings.cert_ttl)
        self.supervisor = Supervisor()
        self.kube_client: Any = None
        self.node_tokens: NodeTokenAuthenticator | None = None
        """On Kubernetes: ztunnels prove their node with their pod's ServiceAccount token (see node_tokens)."""
        if settings.source == "kubernetes":
            self.kube_client = load_client(settings.kubeconfig)
            self.node_tokens = NodeTokenAuthenticator(
                self.kube_client, settings.node_namespace, settings.node_service_account
            )
        self._serving_not_after = datetime.now(UTC)
        """When the serving certificate expires (set by `start`, moved on by each renewal)."""

    @web.middleware
    async def _authenticate_node(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if der is None and scheme.lower() == "bearer":  # no client certificate: a node token, on Kubernetes
                if self.node_tokens is None:
                    raise NodeAuthError(
                        "no_node_credential", "this control takes node tokens only on Kubernetes: present the node "
                        "credential (node-cert.pem)",
                    )  # fmt: skip
                request["node"] = await self.node_tokens.authenticate(token.strip())
            elif der is None and self.node_tokens is not None:
                raise NodeAuthError(
                    "no_node_credential", "no credential: send the node's ServiceAccount token (Authorization: Bearer) "
                    "or present the node credential (node-cert.pem)",
                )  # fmt: skip
            else:
                request["node"] = self.nodes.authenticate(der)
        except NodeAuthError as exc:
            if request.path == wire.CERTIFICATES_PATH:
                self.metrics.certs_refused.labels(exc.reason).inc()
            self.metrics.node_auth_refused.labels(exc.reason).inc()
            log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
            return web.json_response({"error": str(exc), "reason": exc.reason}, status=exc.status)
        return await handler(request)

    def node_app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate_node], client_max_size=1 << 20)
        app.router.add_get(wire.CONFIG_PATH, self.hub.handle)
        app.router.add_post(wire.CERTIFICATES_PATH, self.certificates.handle)

        async def close_streams(_: web.Application) -> None:
            # aiohttp runs this once the listener is closed, before waiting for handlers: a config stream's
            # handler only returns when its stream ends, so without it the wait would last SHUTDOWN_GRACE.
            await self.hub.close()

        app.on_shutdown.append(close_streams)
        return app

    def ops_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/debug/status", self._status)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        return _text("ok\n")

    async def _ready(self, _: web.Request) -> web.Response:
        if not self.store.synced:
            return _text("store not loaded yet\n", 503)
        down = self.supervisor.down()
        if down:
            return _text("".join(f"task {t.name} is down, restarting: {t.last_error}\n" for t in down), 503)
        return _text("ready\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, _: web.Request) -> web.Response:
        mesh = self.settings.mesh
        warnings = await self.advisor.current()
        return web.json_response(
            {
                "build": build.build(),
                "epoch": self.store.epoch,
                "version": self.store.version,
                "updatedAt": self.store.updated_at,
                "synced": self.store.synced,
                "source": self.source.name,
                "trustDomain": self.ca.trust_domain,
                "rootNamespaces": list(mesh.root_namespaces),
                "dataplaneLabels": list(mesh.dataplane_labels),
                "istioCompat": mesh.istio_compat,
                "objects": len(self.store.objects),
                "proxies": self.hub.status(),
                "errors": [
                    {"origin": e.origin, "object": e.object, "reason": e.reason} for e in self.store.all_errors()
                ],
                "warnings": [w.to_json() for w in warnings] + self.hub.root_warnings(),
                "tasks": self.supervisor.status(),
            }
        )

    async def start(self) -> list[web.AppRunner]:
        """Open the operators' listener, load the store, then open the nodes' listener; returns the runners (to
        clean up). Operators come first so /healthz answers (and a liveness probe keeps control alive) while the
        initial listing waits for an API server that is down; /ready says why it is not ready meanwhile."""
        runners = [await _serve(self.ops_app(), self.settings.metrics_listen, None)]
        if self.kube_client is not None and self.settings.ca_cert is None:
            await self._adopt_ca_secret()
        if self.kube_client is not None:
            kube, namespace, root = self.kube_client, self.settings.namespace, self.ca.root_pem
            self.supervisor.start("root-configmap", lambda: keep_published(kube, namespace, root))
        await self._load_store()
        self.supervisor.start("advisor", self.advisor.run)
        host, port = self.settings.listen
        tls, self._serving_not_after = server_tls(self.ca, host, self.settings.namespace)
        self.supervisor.start("serving-cert", lambda: self._renew_serving_cert(tls, host))
        runners.append(await _serve(self.node_app(), (host, port), tls))
        log.info(
            "control serving nodes on %s:%s and operators on %s:%s (store %s, version %s)",
            host,
            port,
            *self.settings.metrics_listen,
            self.settings.store if isinstance(self.source, FileSource) else "kubernetes",
            self.store.version,
        )
        return runners

    async def stop(self) -> None:
        """Stop pushing config (every stream closed, going away) and end the long-lived tasks (the listeners are
        the runners `start` returned: clean them up next)."""
        await self.hub.close()
        await self.supervisor.stop()
        if self.reporter is not None:
            self.reporter.close()

    async def _adopt_ca_secret(self) -> None:
        """Use the root kept in the `meshlet-ca` Secret (or keep ours there): see control.ca_secret. Retried while
        the API server cannot be asked; a Secret that cannot be used fails the start with its reason."""
        backoff = Backoff(0.5, 10.0)
        failures = 0
        while True:
            try:
                done = await asyncio.to_thread(adopt, self.kube_client, self.settings.namespace, self.settings.state)
                break
            except (ApiException, HTTPError, OSError) as exc:
                if failures == 0:  # once per outage, not once per retry
                    log.warning("cannot read or create Secret %s/%s for the root CA (%s); retrying",
                                self.settings.namespace, CA_SECRET, getattr(exc, "reason", None) or exc)  # fmt: skip
                failures += 1
                await asyncio.sleep(backoff.next())
        if done == "adopted":
            self.ca = CertificateAuthority.load_or_create(self.settings.state, self.settings.mesh.trust_domain)
            self.nodes.ca = self.certificates.ca = self.ca
        log.info("root CA: Secret %s/%s %s", self.settings.namespace, CA_SECRET, done)

    async def _load_store(self) -> None:
        """Start the source and wait for its complete initial state: a node proxy that connected before would be
        sent an empty mesh and drop every workload it knows."""
        source = self.source
        if isinstance(source, FileSource):
            self.store.apply(await asyncio.to_thread(source.scan))
            self.supervisor.start("file-source", lambda: source.run(self.store.apply))
            return
        reporter = self.reporter
        assert reporter is not None
        self.supervisor.start("kubernetes-source", lambda: source.run(reporter.sink))
        log.info("listing the mesh's objects from the Kubernetes API server")
        while not self.store.synced:
            await asyncio.sleep(0.05)

    async def _renew_serving_cert(self, ctx: ssl.SSLContext, host: str) -> None:
        """Renew the serving certificate at half its life, for as long as control runs."""
        while True:
            # Read on every turn (not passed in): a restarted renewal goes on from the latest certificate.
            left = (self._serving_not_after - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(1.0, left - SERVING_TTL.total_seconds() / 2))
            try:
                self._serving_not_after = load_serving_cert(ctx, self.ca, host, self.settings.namespace)
                log.info("renewed the serving certificate (expires %s)", self._serving_not_after.isoformat())
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.error("renewing the serving certificate failed: %s; retrying in a minute", exc)
                await asyncio.sleep(60)


async def _serve(app: web.Application, address: tuple[str, int], tls: ssl.SSLContext | None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    await web.TCPSite(runner, *address, ssl_context=tls, reuse_address=True).start()
    return runner


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status)
