"""`python -m ztunnel`: the node proxy, one per node.

python -m ztunnel --node NAME --control https://HOST:15012 --credentials DIR [--zds-socket PATH] ...

Wires the pieces: the config client (mesh index), the identity manager (certificates), the ZDS client
(which pods, with their netns), the per-pod servers, and the admin/metrics/readiness endpoints. On
SIGTERM (or POST /quitquitquit) it stops accepting, lets established connections finish for up to
`--drain-timeout` seconds, then resets what is left and exits 0.
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

from ztunnel.admin import Admin
from ztunnel.config.client import ConfigClient, NodeCredential
from ztunnel.config.state import ConfigState
from ztunnel.identity.manager import IdentityManager
from ztunnel.inpod.client import ZdsClient
from ztunnel.inpod.manager import WorkloadManager
from ztunnel.proxy.context import ProxyContext
from ztunnel.proxy.origdst import OriginalDestination
from ztunnel.proxy.serving import PodServing
from ztunnel.state.mesh import MeshIndex

log = logging.getLogger("ztunnel")
CERT_REFRESH = 5.0
GC_GEN0_THRESHOLD = 50_000


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ztunnel", description="meshlet node proxy")
    p.add_argument("--node", required=True, help="this node's name (as pods' spec.nodeName)")
    p.add_argument("--control", required=True, help="control's URL, e.g. https://10.250.0.1:15012")
    p.add_argument("--credentials", type=Path, required=True, help="directory with node-key/node-cert/root-cert.pem")
    p.add_argument("--zds-socket", type=Path, default=Path("/var/run/meshlet/ztunnel.sock"))
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument("--root-namespace", default="meshlet-system", help="mesh-wide policies live here")
    p.add_argument("--admin", type=host_port, default=("127.0.0.1", 15000), help="admin (keep it on localhost)")
    p.add_argument("--metrics", type=host_port, default=("0.0.0.0", 15020))
    p.add_argument("--readiness", type=host_port, default=("0.0.0.0", 15021))
    p.add_argument("--bpf-dir", type=Path, help="the agent's pinned BPF objects (eBPF redirection backend)")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="seconds to let connections finish")
    p.add_argument("--log-level", default="INFO")
    return p


class Ztunnel:
    """One node proxy process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        credential = NodeCredential.in_dir(args.credentials)
        self.ctx = ProxyContext(
            node=args.node,
            trust_domain=args.trust_domain,
            root_namespace=args.root_namespace,
            identities=IdentityManager(args.control, credential),
            origdst=OriginalDestination(args.bpf_dir),
        )
        self.serving = PodServing(self.ctx)
        self.manager = WorkloadManager(self.serving)
        self._built: dict[int, MeshIndex] = {}
        self.config = ConfigClient(args.control, credential, on_update=self._updated, validate=self._validate)
        self.zds = ZdsClient(args.zds_socket, self.manager)
        self.admin = Admin(self.ctx, self.config, self.zds, self.stop)
        self._stop = asyncio.Event()

    def _validate(self, state: ConfigState) -> None:
        # Converting is the check: a version that cannot be converted is nacked, the last index stays.
        self._built = {state.version: MeshIndex.from_config(state)}

    def _updated(self, state: ConfigState) -> None:
        built = self._built.pop(state.version, None)
        self.ctx.index = built if built is not None else MeshIndex.from_config(state)
        log.info("config version %s: %d workloads, %d services", state.version, len(self.ctx.index.workloads),
                 len(self.ctx.index.services))  # fmt: skip

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        args = self.args
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
        self._zds_task = asyncio.create_task(self.zds.run(), name="zds")
        tasks = [
            asyncio.create_task(self.config.run(), name="config"),
            asyncio.create_task(self.ctx.identities.run(), name="identities"),
            self._zds_task,
            asyncio.create_task(self._refresh(), name="cert-refresh"),
        ]
        log.info("ztunnel for node %s up (admin %s:%d)", args.node, *args.admin)
        try:
            await self._stop.wait()
            await self._drain()
        finally:
            self.zds.stop()
            await self.config.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.manager.close()
            for runner in runners:
                await runner.cleanup()

    async def _drain(self) -> None:
        ctx = self.ctx
        ctx.draining = True
        # Leave the agent at once: it then hands pods to the ztunnel that replaces this one (which
        # may have connected already), and this one never reconnects to take them back.
        self.zds.stop()
        self._zds_task.cancel()
        self.serving.stop_accepting()
        log.info("draining %d connections (up to %.0fs)", len(ctx.tunnels), self.args.drain_timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.drain_timeout
        while ctx.tunnels and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for tunnel in list(ctx.tunnels):
            tunnel.fail()
            if tunnel.upstream is not None and not tunnel.upstream.closed:
                tunnel.upstream.abort()
        if ctx.pool is not None:
            ctx.pool.close()
        for task in list(ctx.tasks):
            task.cancel()
        log.info("drained; %d connections were reset", len(ctx.tunnels))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(CERT_REFRESH)
            self.serving.refresh_certificates()


async def _main(args: argparse.Namespace) -> int:
    proxy = Ztunnel(args)
    # The data path allocates small short-lived objects per frame (events, views), none in cycles: move
    # what start-up made out of the collector's sight and let the youngest generation grow before a pass.
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proxy.stop)
    await proxy.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for f in ("node-key.pem", "node-cert.pem", "root-cert.pem"):
        if not (args.credentials / f).is_file():
            print(f"ztunnel: {args.credentials / f} is missing (provision the node first)", file=sys.stderr)
            return 2
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(_main(args))
    return 0
