"""`python -m ztunnel`: the node proxy, one per node.

python -m ztunnel --node NAME --control https://HOST:15012 --credentials DIR [--zds-socket PATH] ...
python -m ztunnel --node NAME --control https://HOST:15012 --token PATH --root-cert PATH ...   (on Kubernetes)

Wires the pieces: the config client (mesh index), the identity manager (certificates), the ZDS client
(which pods, with their netns), the per-pod servers, and the admin/metrics/readiness endpoints. On
SIGTERM (or POST /quitquitquit) it drains: stops accepting, tells every inbound HBONE connection GOAWAY,
serves the connections and streams it holds to their end for up to `--drain-timeout` seconds, then resets
what is left and exits 0. An upgrade starts a second ztunnel beside this one: when the agent hands the
node to it, this one is told `superseded` and drains the same way, for up to `--upgrade-drain-timeout`
seconds, after leaving the node's ports (admin, metrics, readiness) to the new one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from meshlet_contracts import ports
from meshlet_contracts.mesh_config import ROOT_NAMESPACE
from meshlet_contracts.supervision import Supervisor
from ztunnel.admin import Admin
from ztunnel.config.cache import ConfigCache, local_secret
from ztunnel.config.client import ConfigClient, NodeCredential
from ztunnel.config.state import ConfigState
from ztunnel.identity.manager import IdentityManager
from ztunnel.inpod.client import ZdsClient
from ztunnel.inpod.manager import WorkloadManager
from ztunnel.l7.exchange import Limits
from ztunnel.l7.upstreams import IDLE_TIMEOUT, UpstreamPool
from ztunnel.metrics import DEFAULT_CLUSTER, Metrics
from ztunnel.observe import loop_lag
from ztunnel.observe.accesslog import ACCESS_LOG
from ztunnel.proxy import limits
from ztunnel.proxy.context import ProxyContext
from ztunnel.proxy.limits import HboneLimits
from ztunnel.proxy.origdst import OriginalDestination
from ztunnel.proxy.pool import HbonePool, PoolKey
from ztunnel.proxy.serving import PodServing
from ztunnel.proxy.sockets import NetnsSockets
from ztunnel.state.mesh import MeshIndex

log = logging.getLogger("ztunnel")
CERT_REFRESH = 5.0


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ztunnel", description="meshlet node proxy")
    p.add_argument("--node", required=True, help="this node's name (as pods' spec.nodeName)")
    p.add_argument("--control", required=True, help="control's URL, e.g. https://10.250.0.1:15012")
    p.add_argument("--credentials", type=Path, help="directory with node-key/node-cert/root-cert.pem (local lab)")
    p.add_argument(
        "--token",
        type=Path,
        help="on Kubernetes, instead of --credentials: the pod's projected ServiceAccount token (audience meshlet), "
        "re-read for every request to control",
    )
    p.add_argument("--root-cert", type=Path, help="with --token: the mesh root, to verify control")
    p.add_argument("--zds-socket", type=Path, default=Path("/var/run/meshlet/ztunnel.sock"))
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument(
        "--root-namespace", default=ROOT_NAMESPACE,
        help="mesh-wide policies live here, until control names its root namespaces (controls since 2026-11-29 do)",
    )  # fmt: skip
    p.add_argument("--admin", type=host_port, default=("127.0.0.1", ports.ADMIN), help="admin (keep it on localhost)")
    p.add_argument("--metrics", type=host_port, default=("0.0.0.0", ports.METRICS))
    p.add_argument("--readiness", type=host_port, default=("0.0.0.0", ports.READINESS))
    p.add_argument("--bpf-dir", type=Path, help="the agent's pinned BPF objects (eBPF redirection backend)")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="seconds to let connections finish after SIGTERM")
    p.add_argument(
        "--upgrade-drain-timeout",
        type=float,
        default=60.0,
        help="seconds to let connections finish once a newer ztunnel took the node over (an upgrade): the new "
        "one takes every new connection meanwhile (default %(default)s)",
    )
    p.add_argument(
        "--config-cache",
        type=lambda text: Path(text) if text else None,
        default=Path("/var/lib/meshlet/ztunnel/config.json"),
        help="where the last good config is kept (verified with the node key) for a start while control is away; "
        "'' disables it",
    )
    p.add_argument("--config-cache-max-age", type=float, default=24 * 3600.0, help="seconds a cached config is used")
    p.add_argument(
        "--config-wait", type=float, default=3.0, help="seconds a connection waits for a first config before reset"
    )
    fds = limits.fd_limit()  # the per-peer defaults are shares of it (see ztunnel/proxy/limits.py)
    hbone = p.add_argument_group("HBONE limits (15008)", "what one connection and one peer may hold of this node")
    hbone.add_argument(
        "--max-streams-per-connection",
        type=positive_int,
        default=limits.STREAMS_PER_CONNECTION,
        help="SETTINGS_MAX_CONCURRENT_STREAMS; more streams are refused (default %(default)s)",
    )
    hbone.add_argument(
        "--max-connections-per-peer",
        type=positive_int,
        default=limits.connections_share(fds),
        help="connections per source identity and per source IP (default %(default)s: 1/20 of the fds)",
    )
    hbone.add_argument(
        "--max-streams-per-peer",
        type=positive_int,
        default=limits.streams_share(fds),
        help="streams per source identity and per source IP (default %(default)s: 3/5 of the fds)",
    )
    hbone.add_argument(
        "--hbone-preface-timeout",
        type=positive_float,
        default=limits.PREFACE_TIMEOUT,
        help="seconds for the HTTP/2 preface after the TLS handshake (default %(default)s)",
    )
    hbone.add_argument(
        "--hbone-idle-timeout",
        type=positive_float,
        default=limits.IDLE_TIMEOUT,
        help="seconds without a stream before an inbound connection gets GOAWAY (default %(default)s)",
    )
    http = p.add_argument_group("HTTP (L7)", "requests the proxy parses: HTTP Service ports, ports with HTTP rules")
    http_defaults = Limits()
    http.add_argument(
        "--http-max-head-bytes",
        type=positive_int,
        default=http_defaults.max_head,
        help="a request's line and headers, at most; more is answered 431 (default %(default)s)",
    )
    http.add_argument(
        "--http-header-timeout",
        type=positive_float,
        default=http_defaults.header_timeout,
        help="seconds from a request's first byte to its complete head; later is answered 408 (default %(default)s)",
    )
    http.add_argument(
        "--http-idle-timeout",
        type=positive_float,
        default=http_defaults.idle_timeout,
        help="seconds a client's keep-alive connection may wait for its next request (default %(default)s)",
    )
    http.add_argument(
        "--http-upstream-idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help="seconds an upstream connection (HBONE stream) is kept for the next request; 0: one per request "
        "(default %(default)s)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--access-log",
        action="store_true",
        help="write a JSON access log line per connection and request to stderr (admin: POST /logging?access=on|off)",
    )
    p.add_argument(
        "--cluster-id",
        default=DEFAULT_CLUSTER,
        help="this mesh's cluster, as metrics' source_cluster/destination_cluster say (default %(default)s)",
    )
    return p


def positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def node_credential(args: argparse.Namespace) -> NodeCredential:
    if args.token is not None:
        return NodeCredential.from_token(args.token, args.root_cert)
    return NodeCredential.in_dir(args.credentials)


def credential_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with how this node is told to prove itself (exactly one way, its files present), or None."""
    if args.credentials is not None and (args.token is not None or args.root_cert is not None):
        return "give either --credentials DIR or --token PATH with --root-cert PATH, not both"
    if args.credentials is None and (args.token is None or args.root_cert is None):
        missing = "--token PATH" if args.token is None else "--root-cert PATH"
        if args.token is None and args.root_cert is None:
            return "give --credentials DIR (a provisioned node) or --token PATH with --root-cert PATH (Kubernetes)"
        return f"--token and --root-cert go together: {missing} is missing"
    if args.credentials is not None:
        files = [args.credentials / f for f in ("node-key.pem", "node-cert.pem", "root-cert.pem")]
        hint = "provision the node first"
    else:
        files = [args.token, args.root_cert]
        hint = "the ServiceAccount token projected by the kubelet, and the meshlet-root-cert ConfigMap"
    for f in files:
        if not f.is_file():
            return f"{f} is missing ({hint})"
    return None


class Ztunnel:
    """One node proxy process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        ACCESS_LOG.set(args.access_log)
        credential = node_credential(args)
        self.ctx = ProxyContext(
            node=args.node,
            trust_domain=args.trust_domain,
            identities=IdentityManager(args.control, credential),
            sockets=NetnsSockets(OriginalDestination(args.bpf_dir)),
            config_wait=args.config_wait,
            metrics=Metrics(cluster=args.cluster_id),
            http_limits=Limits(
                max_head=args.http_max_head_bytes,
                header_timeout=args.http_header_timeout,
                idle_timeout=args.http_idle_timeout,
            ),
            http_upstreams=UpstreamPool(idle_timeout=args.http_upstream_idle_timeout),
            limits=HboneLimits(
                max_streams_per_connection=args.max_streams_per_connection,
                max_connections_per_peer=args.max_connections_per_peer,
                max_streams_per_peer=args.max_streams_per_peer,
                preface_timeout=args.hbone_preface_timeout,
                idle_timeout=args.hbone_idle_timeout,
            ),
        )
        self.default_roots: tuple[str, ...] = (args.root_namespace,)
        """Root namespaces until control names them (a control before 2026-11-29 does not)."""
        self.ctx.index = MeshIndex(root_namespaces=self.default_roots)  # what /config_dump shows before any config
        self.cache = self._config_cache(args, credential)
        self.serving = PodServing(self.ctx)
        self.manager = WorkloadManager(self.serving)
        self._built: dict[int, MeshIndex] = {}
        self.config = ConfigClient(args.control, credential, on_update=self._updated, validate=self._validate)
        self.zds = ZdsClient(args.zds_socket, self.manager)
        self.zds.on_superseded = self._superseded
        self.admin = Admin(self.ctx, self.config, self.zds, self.stop)
        self.supervisor = Supervisor()
        """Keeps the long-lived tasks alive; one that is down makes ztunnel unready until it is back."""
        self.admin.supervisor = self.supervisor
        self._stop = asyncio.Event()

    @staticmethod
    def _config_cache(args: argparse.Namespace, credential: NodeCredential) -> ConfigCache | None:
        if args.config_cache is None:
            return None
        key = credential.key
        if key is None:  # a token is no key to derive the cache's MAC key from: see local_secret
            try:
                key = local_secret(args.config_cache)
            except OSError as exc:
                log.warning("no config cache: cannot keep its secret beside %s: %s", args.config_cache, exc)
                return None
        return ConfigCache(args.config_cache, args.node, args.trust_domain, key, args.config_cache_max_age)

    def _validate(self, state: ConfigState) -> None:
        # Converting is the check: a version that cannot be converted is nacked, the last index stays.
        self._built = {state.version: MeshIndex.from_config(state, self.ctx.index, self.default_roots)}

    def _updated(self, state: ConfigState) -> None:
        built = self._built.pop(state.version, None)
        if built is None:
            built = MeshIndex.from_config(state, self.ctx.index, self.default_roots)
        self.ctx.index = built
        self.ctx.clusters.installed(self.ctx.index)
        self.ctx.config_loaded.set()
        self.ctx.config_source = "control"
        if self.ctx.pool is not None:
            self._retire_gone(self.ctx.pool, self.ctx.index)
        if self.cache is not None:
            self.cache.save(state)
        log.info("config version %s: %d workloads, %d services", state.version, len(self.ctx.index.workloads),
                 len(self.ctx.index.services))  # fmt: skip

    @staticmethod
    def _retire_gone(pool: HbonePool, index: MeshIndex) -> None:
        def still_there(key: PoolKey) -> bool:
            workload = index.by_ip.get(key[2])
            return workload is not None and workload.identity == key[3] and workload.uid == key[4]

        if retired := pool.retire(still_there):
            log.info("%d HBONE connection(s) retired: their destination is no longer that workload", retired)

    def stop(self) -> None:
        self._stop.set()

    def _superseded(self) -> None:
        """A newer ztunnel owns the node now (an upgrade): drain. Called from within the ZDS task, which
        ends for good here (it would only be refused again)."""
        self.supervisor.cancel("zds")
        self.stop()

    def load_cache(self) -> None:
        """Start from the verified last good config, if any: the data path serves at once, before control."""
        if self.cache is None:
            return
        cached = self.cache.load(self._validate)
        if cached is None:
            return
        self.config.state = cached.state
        self.config.updated_at = cached.saved_at
        self._updated(cached.state)
        self.ctx.config_source = "cache"
        log.info("serving the cached config version %s until control answers", cached.state.version)

    async def run(self) -> None:
        args = self.args
        self.load_cache()
        runners = []
        for app, (host, port) in (
            (self.admin.admin_app(), args.admin),
            (self.admin.metrics_app(), args.metrics),
            (self.admin.readiness_app(), args.readiness),
        ):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port, reuse_port=True).start()
            runners.append(runner)
        sup = self.supervisor
        sup.start("config", self.config.run)
        sup.start("identities", self.ctx.identities.run)
        sup.start("zds", self.zds.run)
        sup.start("cert-refresh", self._refresh)
        sup.start("loop-lag", lambda: loop_lag.watch(self.ctx.metrics))
        if self.cache is not None:
            sup.start("config-cache", self.cache.run)
        log.info("ztunnel for node %s up (admin %s:%d)", args.node, *args.admin)
        try:
            await self._stop.wait()
            await self._drain(runners)
        finally:
            sup.begin_stop()  # the clients end on their own below: a clean end, not a failure to restart
            self.zds.stop()
            await self.config.stop()
            await sup.stop()
            self.manager.close()
            for runner in runners:
                await runner.cleanup()

    async def _drain(self, runners: list[web.AppRunner]) -> None:
        ctx = self.ctx
        ctx.draining = True
        superseded = self.zds.superseded_by is not None
        # Leave the agent at once: it then hands pods to the ztunnel that replaces this one (which
        # may have connected already), and this one never reconnects to take them back.
        self.zds.stop()
        self.supervisor.cancel("zds")
        # Close the pods' listeners: a newer ztunnel listening on the same ports (SO_REUSEPORT) takes every
        # new connection, and the ones queued in ours move to it (tcp_migrate_req, see inpod/listeners.py).
        self.serving.stop_accepting()
        self.manager.stop_listening()
        if superseded:  # the node's ports too: probes and scrapes then reach the new one only
            for runner in runners:
                await runner.cleanup()
            runners.clear()
        # Peers open no new stream on our HBONE connections (a stream they sent meanwhile is refused, and
        # they retry it on a fresh connection: the new ztunnel); the streams we took are served to their end.
        for conn in list(ctx.inbound_hbone):
            conn.drain()
        limit = self.args.upgrade_drain_timeout if superseded else self.args.drain_timeout
        log.info("draining %d connections (up to %.0fs)%s", len(ctx.tunnels), limit,
                 " after a newer ztunnel took the node over" if superseded else "")  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (ctx.tunnels or ctx.inbound_hbone) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = len(ctx.tunnels)
        for tunnel in list(ctx.tunnels):
            tunnel.fail()
            if tunnel.upstream is not None and not tunnel.upstream.closed:
                tunnel.upstream.abort()
        for conn in list(ctx.inbound_hbone):
            conn.close()
        ctx.http_upstreams.close()  # kept-alive upstream connections no request holds
        if ctx.pool is not None:
            ctx.pool.close()
        for task in list(ctx.tasks):
            task.cancel()
        log.info("drained; %d connections were reset", left)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(CERT_REFRESH)
            self.serving.refresh_certificates()


async def _main(args: argparse.Namespace) -> int:
    proxy = Ztunnel(args)
    # What start-up made lives as long as the process: out of the collector's sight, so a pass only looks
    # at what came later. The thresholds stay Python's: a connection holds no reference cycle, so it is
    # freed as it closes and the data path rarely triggers a pass (none in 1.5 GB plus 6,000 short
    # connections), while a cycle that slips in is collected within ~70,000 allocations. Raised
    # thresholds (50,000, 20, 20) put the full pass ~20M allocations away, which let every short
    # connection's TLS state pile up (~40 KB each) while cycles existed.
    gc.freeze()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proxy.stop)
    await proxy.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    limits.raise_fd_limit()  # before the parser: the per-peer defaults are shares of it
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = credential_problem(args)
    if problem is not None:
        print(f"ztunnel: {problem}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(_main(args))
    return 0
