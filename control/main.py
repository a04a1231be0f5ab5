"""`python -m control`: run the control service, or provision a node credential.

python -m control serve --store DIR --state DIR [--listen HOST:PORT] [--metrics HOST:PORT] ...
python -m control serve --source kubernetes [--kubeconfig PATH] --state DIR ...
python -m control provision-node NAME --state DIR --out DIR [--trust-domain TD]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from datetime import timedelta
from pathlib import Path

import uvloop

from control.ca import CAError
from control.kube_client import KubeConfigError
from control.model.mesh import MeshSettings
from control.nodes import NodeRegistry
from control.server import Control, load_ca
from control.settings import ControlSettings
from meshlet_contracts.identity import DNS_LABEL
from meshlet_contracts.mesh_config import DATAPLANE_LABEL, ISTIO_DATAPLANE_LABEL, ISTIO_ROOT_NAMESPACE, ROOT_NAMESPACE

log = logging.getLogger("control")


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)


def duration(text: str) -> timedelta:
    m = re.fullmatch(r"(\d+)([smhd])", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def namespace_name(text: str) -> str:
    # Checked here: a root every ztunnel refuses (parse_mesh) would have them nack every version, for ever.
    if not DNS_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace name (lowercase a-z, 0-9, '-', at most 63)")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m control", description="meshlet control service")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the control service")
    serve.add_argument(
        "--source", choices=["file", "kubernetes"], default="file",
        help="where the mesh's objects come from: a --store directory or the API server (default %(default)s)",
    )  # fmt: skip
    serve.add_argument("--store", type=Path, help="directory of Kubernetes-shaped YAML (required with --source file)")
    serve.add_argument("--kubeconfig", type=Path, help="with --source kubernetes (default: in-cluster, or kubectl's)")
    k8s = serve.add_argument_group("on Kubernetes", "node identity by ServiceAccount token, the published root")
    k8s.add_argument(
        "--namespace", default=os.environ.get("POD_NAMESPACE") or "meshlet-system",
        help="control's namespace, where the root ConfigMap goes (default $POD_NAMESPACE or %(default)s)",
    )  # fmt: skip
    k8s.add_argument("--node-namespace", help="namespace of the node DaemonSet's pods (default: --namespace)")
    k8s.add_argument(
        "--node-service-account", default="meshlet-node", help="ServiceAccount whose pods' tokens prove a node"
    )
    serve.add_argument("--state", type=Path, required=True, help="CA and node registrations (kept across restarts)")
    serve.add_argument(
        "--listen", type=host_port, default=("127.0.0.1", 15012), help="nodes (HTTPS); default %(default)s"
    )
    serve.add_argument("--metrics", type=host_port, default=("127.0.0.1", 15014), help="operators (HTTP)")
    serve.add_argument("--trust-domain", default="cluster.local")
    serve.add_argument("--dataplane-label", default=DATAPLANE_LABEL, help="label key that enrolls (%(default)s)")
    serve.add_argument(
        "--root-namespace", default=ROOT_NAMESPACE, type=namespace_name,
        help="its policies apply to every workload; sent to every ztunnel (default %(default)s)",
    )  # fmt: skip
    serve.add_argument(
        "--istio-compat", action="store_true",
        help=f"also honor Istio's names: {ISTIO_ROOT_NAMESPACE} is a root namespace, {ISTIO_DATAPLANE_LABEL} enrolls",
    )  # fmt: skip
    serve.add_argument("--cert-ttl", type=duration, default=timedelta(hours=24), help="workload certificate TTL")
    _ca_options(serve)
    serve.add_argument("--log-level", default="INFO")
    prov = sub.add_parser("provision-node", help="issue and register a node credential")
    prov.add_argument("node")
    prov.add_argument("--state", type=Path, required=True)
    prov.add_argument(
        "--out", type=Path, required=True, help="directory for node-key.pem, node-cert.pem, root-cert.pem"
    )
    prov.add_argument("--trust-domain", default="cluster.local")
    _ca_options(prov)  # a node credential must come from the CA that serve uses
    return p


def _ca_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca-cert", type=Path, help="plug-in CA certificate (with --ca-key)")
    p.add_argument("--ca-key", type=Path, help="plug-in CA key")
    p.add_argument("--ca-root", type=Path, help="root of a plug-in intermediate CA")


async def serve(settings: ControlSettings) -> None:
    control = Control(settings)
    runners = await control.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    started = loop.time()
    await control.stop()
    for runner in runners:
        await runner.cleanup()
    log.info("stopped in %.2fs", loop.time() - started)


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "serve" and args.source == "file" and args.store is None:
        p.error("serve: --store DIR is required with --source file")
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "provision-node":
            settings = ControlSettings(
                store=Path("."), state=args.state, mesh=MeshSettings(args.trust_domain),
                ca_cert=args.ca_cert, ca_key=args.ca_key, ca_root=args.ca_root,
            )  # fmt: skip
            files = NodeRegistry(args.state, load_ca(settings)).provision(args.node, args.out)
            print(f"node {args.node}: {files.key}, {files.cert}, {files.root}")
            return
        settings = ControlSettings(
            store=args.store,
            source=args.source,
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            node_namespace=args.node_namespace or args.namespace,
            node_service_account=args.node_service_account,
            state=args.state,
            listen=args.listen,
            metrics_listen=args.metrics,
            mesh=MeshSettings(
                trust_domain=args.trust_domain,
                dataplane_label=args.dataplane_label,
                root_namespace=args.root_namespace,
                istio_compat=args.istio_compat,
            ),  # fmt: skip
            cert_ttl=args.cert_ttl,
            ca_cert=args.ca_cert,
            ca_key=args.ca_key,
            ca_root=args.ca_root,
        )
        uvloop.run(serve(settings))
    except (CAError, KubeConfigError, ValueError, OSError) as exc:
        print(f"control: error: {exc}", file=sys.stderr)
        sys.exit(1)
