"""`python -m agent`: the node agent, one per node.

It watches the store (Namespaces and Pods, through control's file or kubernetes source and model; on Kubernetes
only this node's pods, by a `spec.nodeName` fieldSelector), keeps this node's
enrolled pods captured with the chosen backend, serves ZDS to the node's ztunnel, and reports on its
status socket. Store changes reach the kernel once the source hears of them (inotify, else its poll) plus one
reconcile; a periodic pass every `resync` seconds repairs drift and finds pods whose netns appeared late.

Its long-lived tasks (the store's watch, the reconcile loop, ZDS accepts) run under a `Supervisor`: one that
fails is restarted with backoff and shows in the status API's `tasks` (and so in `meshlet status`) while down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

import uvloop

from agent.annotating import set_annotation
from agent.annotating_kube import PodAnnotator
from agent.enrolling import PodTarget, node_pods
from agent.reconciling import Reconciler
from agent.redirect.choosing import choose
from agent.redirect.ebpf import EbpfBackend
from agent.redirect.routing import RedirectError
from agent.status import serve_status
from agent.store_view import NodeView
from agent.zds import ZdsServer
from control.kube_client import KubeConfigError, load_client
from control.model.fields import ObjectKey
from control.model.mesh import MeshSettings
from control.sources.files import FileSource
from control.sources.kube_api import AGENT_RESOURCES
from control.sources.kubernetes import KubeSource
from control.store import ConfigStore
from meshlet_contracts import build
from meshlet_contracts.bpf_maps import PIN_ROOT
from meshlet_contracts.mesh_config import DATAPLANE_LABEL, ISTIO_DATAPLANE_LABEL
from meshlet_contracts.supervision import Supervisor

log = logging.getLogger("agent")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent", description="meshlet node agent")
    p.add_argument("--node", required=True, help="this node's name (pods with spec.nodeName == NODE)")
    p.add_argument(
        "--source", choices=["file", "kubernetes"], default="file",
        help="where Namespaces and Pods come from: a --store directory or the API server (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--store", type=Path, help="directory of Kubernetes-shaped YAML (required with --source file)")
    p.add_argument("--kubeconfig", type=Path, help="with --source kubernetes (default: in-cluster, or kubectl's)")
    p.add_argument("--zds-socket", type=Path, default=Path("/var/run/meshlet/ztunnel.sock"))
    p.add_argument("--status-socket", type=Path, default=Path("/var/run/meshlet/agent.sock"))
    p.add_argument(
        "--redirect",
        choices=["iptables", "ebpf", "auto"],
        default="auto",
        help="redirection backend (auto: eBPF if it works)",
    )
    p.add_argument("--bpf-dir", type=Path, default=PIN_ROOT / "node", help="where this node's BPF objects are pinned")
    p.add_argument(
        "--local-hop-acceleration",
        action="store_true",
        help="eBPF: pass same-node app <-> ztunnel data socket to socket (sk_msg); faster, but a slow reader "
        "makes the kernel buffer without the usual receive-buffer limit",
    )
    p.add_argument("--pods-cgroup", type=Path, help="cgroup v2 directory holding this node's pods (eBPF backend)")
    p.add_argument("--probe-ip", required=True, help="the node address kubelet probes come from")
    p.add_argument("--dataplane-label", default=DATAPLANE_LABEL, help="label key that enrolls (%(default)s)")
    p.add_argument(
        "--istio-compat", action="store_true",
        help=f"{ISTIO_DATAPLANE_LABEL} enrolls and opts out too (give control the same flag)",
    )  # fmt: skip
    p.add_argument("--resync", type=float, default=2.0, help="seconds between full reconcile passes")
    p.add_argument("--log-level", default="INFO")
    return p


class Agent:
    """Wires the store, the reconciler, ZDS and the status API together."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.time()
        self.mesh = MeshSettings(dataplane_label=args.dataplane_label, istio_compat=args.istio_compat)
        self.store = ConfigStore(self.mesh)
        self.source: FileSource | KubeSource
        self.annotator: PodAnnotator | None = None
        if args.source == "kubernetes":
            load_client(args.kubeconfig)  # a kubeconfig that does not work fails the start, with its reason

            def factory() -> Any:  # a client per watching thread (and one for annotations)
                return load_client(args.kubeconfig)

            self.source = KubeSource(factory, AGENT_RESOURCES, pod_field_selector=f"spec.nodeName={args.node}")
            self.annotator = PodAnnotator(factory)
        else:
            self.source = FileSource(args.store, view=NodeView(args.node))
        self.backend, self.backend_reason = choose(
            args.redirect, args.probe_ip, args.bpf_dir, args.pods_cgroup, args.local_hop_acceleration
        )
        self.zds = ZdsServer(args.zds_socket, lambda: self.reconciler.replay())
        self.reconciler = Reconciler(self.backend, self.zds, self._annotate)
        self._wake = asyncio.Event()
        self._first_pass = asyncio.Event()
        """Set once a reconcile pass has run: ZDS is served from then on (`_serve_zds`)."""
        self.supervisor = Supervisor()

    def _annotate(self, target: PodTarget, value: str | None) -> bool:
        if self.annotator is not None:
            return self.annotator(target.namespace, target.name, value)
        origin = self.store.origin(ObjectKey("Pod", target.namespace, target.name))
        return origin is not None and set_annotation(Path(origin), target.namespace, target.name, value)

    def snapshot(self) -> dict[str, Any]:
        pods = sorted((s.to_json() for s in self.reconciler.pods.values()), key=lambda p: (p["namespace"], p["name"]))
        return {
            "node": self.args.node,
            "build": build.build(),
            "backend": self.backend.name,
            "backendReason": self.backend_reason,
            "dataplaneLabels": list(self.mesh.dataplane_labels),
            "bpf": self.backend.status() if isinstance(self.backend, EbpfBackend) else {"programs": []},
            "startedAt": self.started,
            "ztunnel": {"connected": self.zds.connected, "connects": self.zds.connects, "served": len(self.zds.served),
                        "pid": self.zds.owner.pid if self.zds.owner else None},
            "store": {"source": self.source.name, "path": str(self.args.store) if self.args.store else None,
                      "synced": self.store.synced,
                      "version": self.store.version, "errors": [str(e) for e in self.store.all_errors()]},
            "pods": pods,
            "tasks": self.supervisor.status(),
        }  # fmt: skip

    async def run(self) -> None:
        status = await serve_status(self.args.status_socket, self.snapshot)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await self._load_store()
            self.supervisor.start("reconcile", self._loop)
            serving = asyncio.create_task(self._serve_zds(), name="zds-start")
            tasks.append(serving)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("agent for node %s running (%s backend)", self.args.node, self.backend.name)
            stopped = asyncio.create_task(stop.wait())
            tasks.append(stopped)
            await asyncio.wait({stopped, serving}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done() and not stopped.done():
                serving.result()  # ZDS could not be served: the agent fails as it would have at start
                await stopped
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Rules stay: captured pods stay captured (fail closed) until an agent releases them.
            await self.supervisor.stop()
            await self.zds.close()
            await status.cleanup()

    async def _load_store(self) -> None:
        """Start the source; return once its complete initial state is in the store (a first pass on a partial
        view would release pods it has not heard of yet)."""
        source = self.source
        if isinstance(source, FileSource):
            self.store.apply(await asyncio.to_thread(source.scan))
        self.store.subscribe(self._wake.set)
        self.supervisor.start("store", lambda: source.run(self.store.apply))
        if isinstance(source, KubeSource):
            log.info("listing this node's pods from the Kubernetes API server")
            while not self.store.synced:
                await asyncio.sleep(0.05)

    async def _serve_zds(self) -> None:
        """Serve ZDS once the first reconcile pass is done: a ztunnel that connects (a restarted agent's ztunnel
        reconnects at once) then gets the node's pods in its snapshot, never an empty one that would make it drop
        every pod's listeners and open new ones a moment later."""
        await self._first_pass.wait()
        await self.zds.start(self.supervisor)
        self.zds.on_connect = self._wake.set

    async def _loop(self) -> None:
        while True:
            # Cleared before the pass, not after: a change that arrives while the pass runs (it may have
            # read the store before the change) must start another pass, not wait for the next resync.
            self._wake.clear()
            await self._pass()
            self._first_pass.set()
            try:
                await asyncio.wait_for(self._wake.wait(), self.args.resync)
            except TimeoutError:
                pass

    async def _pass(self) -> None:
        try:
            await self.reconciler.sync(node_pods(self.store.objects.values(), self.args.node, self.mesh))
        except Exception:
            log.exception("reconcile pass failed; retrying")


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.source == "file" and args.store is None:
        p.error("--store DIR is required with --source file")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        agent = Agent(args)
    except (RedirectError, KubeConfigError) as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    uvloop.run(agent.run())
