"""`meshlet lab ...`: bring the local cluster up and down, look at it, run commands in its pods and nodes."""

from __future__ import annotations

import json
import os
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from meshlet.cli import demo_view
from meshlet.lab import cluster, deploy, kernel, kube_mesh, processes
from meshlet.lab import restart as restart_mod
from meshlet.lab.apps import AppsError
from meshlet.lab.apps_objects import Obj
from meshlet.lab.demo import traffic, ztunnel_summary
from meshlet.lab.plan import REDIRECT_MODES, check_id

console = Console()
"""Talks to lab addresses directly, whatever http_proxy the environment sets."""
progress = Console(stderr=True)  # spinners go to stderr, so stdout stays clean for -o json


def _lab_id(ctx: click.Context) -> str:
    lab_id: str = ctx.obj["lab_id"]
    return lab_id


def _checked_id(lab_id: str) -> str:
    try:
        check_id(lab_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--id") from exc
    return lab_id


def _sub_id(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """`meshlet lab up --id X` as well as `meshlet lab --id X up`: one way to name a lab, wherever it is typed."""
    if value is not None:
        ctx.ensure_object(dict)["lab_id"] = _checked_id(value)


lab_id_option = click.option(
    "--id", callback=_sub_id, expose_value=False, is_eager=True, help="The lab's id (as `meshlet lab --id`)."
)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.UsageError("the lab builds network namespaces, links and cgroups: run it as root")


@click.group()
@click.option(
    "--id",
    "lab_id",
    envvar="MESHLET_LAB",
    default="demo",
    show_default=True,
    help="Lab id (1-8 of a-z0-9): prefixes every name the lab makes, so labs never collide. Env: MESHLET_LAB.",
)
@click.pass_context
def lab(ctx: click.Context, lab_id: str) -> None:
    """The local cluster: nodes and pods as network namespaces on this machine.

    \b
    Each node is a netns on a bridge (the node network); each pod a netns with a veth to
    its node, an IP from the node's pod CIDR and its own cgroup, running a sample HTTP app
    on 8080. Namespace, Node, Pod, Service and ServiceAccount objects are written as YAML
    into the lab's store directory, which the control service reads.
    """
    ctx.obj = {"lab_id": _checked_id(lab_id)}


@lab.command()
@lab_id_option
@click.option("--nodes", default=2, show_default=True, help="Number of nodes (1-8).")
@click.option("--pods-per-node", default=2, show_default=True, help="Pods per node, alternating namespaces mesh/plain.")
@click.option(
    "--redirect",
    type=click.Choice(REDIRECT_MODES),
    default="auto",
    show_default=True,
    help="How nodes will steer enrolled pods' traffic into the node proxy.",
)
@click.option(
    "--node-daemons/--no-node-daemons",
    default=True,
    show_default=True,
    help="Start each node's agent and ztunnel (without: control and pods only, to run them by hand).",
)
@click.option(
    "--service-port-name",
    default="http",
    show_default=True,
    help="Name of the `web` services' port: `http`/`http-*` makes it HTTP (L7), `tcp`/`tcp-*` plain TCP (L4).",
)
@click.option(
    "--service-app-protocol",
    default="",
    help="appProtocol of the `web` services' port (http, tcp, kubernetes.io/h2c, ...); decides over the name.",
)
@click.option(
    "--ztunnel-arg",
    "ztunnel_args",
    multiple=True,
    metavar="ARG",
    help="One more argument for every node's ztunnel, after the lab's own (repeat it; e.g. "
    "--ztunnel-arg=--http-upstream-idle-timeout --ztunnel-arg=0).",
)
@click.option(
    "--source",
    type=click.Choice(["file", "kubernetes"]),
    default="file",
    show_default=True,
    help="Where control and the agents read the lab's objects: a store directory, or a Kubernetes API server "
    "(the repository's test API server; pods get ServiceAccount tokens, ztunnels authenticate with them).",
)
@click.option(
    "--istio-compat",
    is_flag=True,
    help="Control and the agents honor Istio's names too: istio-system is a root namespace (its policies apply to "
    "the whole mesh) and istio.io/dataplane-mode enrolls.",
)
@click.option(
    "--apps",
    "apps_file",
    metavar="FILE",
    help="Manifests to `lab apply` once the lab is up (Namespaces, Deployments, Services, ServiceAccounts, ...).",
)
@click.pass_context
def up(
    ctx: click.Context,
    nodes: int,
    pods_per_node: int,
    redirect: str,
    node_daemons: bool,
    service_port_name: str,
    service_app_protocol: str,
    ztunnel_args: tuple[str, ...],
    source: str,
    istio_compat: bool,
    apps_file: str | None,
) -> None:
    """Create the lab (removing any earlier one under the same id first)."""
    _need_root()
    manifests = _manifests(apps_file, "--apps") if apps_file else []  # read first: a bad file fails before `up`
    started = time.monotonic()
    with progress.status(f"bringing up lab {_lab_id(ctx)!r}: {nodes} nodes x {pods_per_node} pods"):
        state = cluster.up(
            _lab_id(ctx),
            nodes,
            pods_per_node,
            redirect,
            node_daemons,
            service_port_name,
            service_app_protocol,
            ztunnel_args,
            source,
            istio_compat,
        )
    where = f"API server {kube_mesh.api_url(state)}" if source == "kubernetes" else f"store {state.store}"
    console.print(
        f"lab [bold]{state.plan.lab_id}[/bold] up in {time.monotonic() - started:.1f}s: "
        f"{len(state.plan.nodes)} nodes, {len(state.plan.pods)} pods; {where}"
    )
    if manifests:
        _run_apps(state.plan.lab_id, manifests)
    _print_status(cluster.status(state.plan.lab_id))


def _manifests(path: str, hint: str) -> list[Obj]:
    try:
        return deploy.read_manifests(path)
    except (OSError, AppsError) as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from exc


def _run_apps(lab_id: str, manifests: list[Obj], delete: bool = False) -> None:
    """Apply (or delete) the manifests, printing one line per object as kubectl does; exit 1 when some
    object to delete was not there (as kubectl does)."""
    try:
        change = deploy.delete(lab_id, manifests) if delete else deploy.apply(lab_id, manifests)
    except (AppsError, cluster.LabError) as exc:
        raise click.ClickException(str(exc)) from exc
    for line in change.results:
        click.echo(line)
    if any(line.endswith(" not found") for line in change.results):
        sys.exit(1)


@lab.command("apply")
@lab_id_option
@click.option("-f", "--filename", "path", required=True, help="YAML manifests (`-` reads stdin).")
@click.pass_context
def apply_(ctx: click.Context, path: str) -> None:
    """Create or update objects from manifests, the way `kubectl apply` does.

    \b
    Deployments become lab pods (netns running the sample app) named
    <deployment>-<pod-template-hash>-<id>, spread over the nodes; Services get
    a ClusterIP from the lab's range; other kinds (HTTPRoute, ...) are stored
    for control. Applying the same file again changes nothing.
    """
    _need_root()
    _run_apps(_lab_id(ctx), _manifests(path, "-f"))


@lab.command("delete")
@lab_id_option
@click.option("-f", "--filename", "path", required=True, help="YAML manifests (`-` reads stdin).")
@click.pass_context
def delete_(ctx: click.Context, path: str) -> None:
    """Delete the objects the manifests name (a Deployment with its pods, a Namespace with its objects)."""
    _need_root()
    _run_apps(_lab_id(ctx), _manifests(path, "-f"), delete=True)


@lab.command()
@lab_id_option
@click.pass_context
def down(ctx: click.Context) -> None:
    """Remove every netns, link, cgroup, process and file of the lab. Safe to run twice."""
    _need_root()
    removed = cluster.down(_lab_id(ctx))
    if not (removed.processes or removed.netns or removed.links or removed.cgroups or removed.directory):
        console.print(f"lab {_lab_id(ctx)!r}: nothing to remove")
        return
    console.print(
        f"lab {_lab_id(ctx)!r} removed: {len(removed.processes)} processes, {len(removed.netns)} netns, "
        f"{len(removed.links)} host links, {len(removed.cgroups)} cgroups"
        + (f", {removed.directory}" if removed.directory else "")
    )


@lab.command()
@lab_id_option
@click.argument("node")
@click.argument("component", type=click.Choice(restart_mod.COMPONENTS))
@click.option(
    "--overlap",
    is_flag=True,
    help="ztunnel: start the new one beside the old one; the agent hands it the node, the old one drains and "
    "exits on its own (the zero-downtime upgrade).",
)
@click.option("-o", "--output", type=click.Choice(["line", "json"]), default="line", show_default=True)
@click.pass_context
def restart(ctx: click.Context, node: str, component: str, overlap: bool, output: str) -> None:
    """Restart (upgrade in place) a node's ztunnel or agent with the same arguments.

    \b
    Without --overlap: SIGTERM the running process, wait for it to exit, start
    the new one and wait until it is ready. With --overlap (ztunnel): start the
    new one first and return once it owns the node and is ready. Prints the old
    and new pid and the time to ready.
    """
    _need_root()
    try:
        done = restart_mod.restart(_lab_id(ctx), node, component, overlap)
    except (cluster.LabError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(done.to_json()) if output == "json" else done.line())


@lab.command()
@lab_id_option
@click.argument("name")
@click.pass_context
def ip(ctx: click.Context, name: str) -> None:
    """Print the IP of a pod (NAME or NAMESPACE/NAME) or a node, for scripts and examples:
    `meshlet lab exec web-1a -- curl -s http://$(meshlet lab ip web-2a):8080/`."""
    click.echo(cluster.ip_of(_lab_id(ctx), name))


@lab.command()
@lab_id_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def status(ctx: click.Context, output: str) -> None:
    """List the lab's nodes and pods (name, namespace, node, IP, enrolled)."""
    st = cluster.status(_lab_id(ctx))
    if output == "json":
        click.echo(json.dumps(st, indent=2))
    else:
        _print_status(st)


def _print_status(st: dict[str, object]) -> None:
    nodes = Table("NODE", "IP", "POD CIDR", "NETNS", title="nodes", title_justify="left")
    for n in st["nodes"]:  # type: ignore[attr-defined]
        nodes.add_row(n["name"], n["ip"], n["podCIDR"], n["netns"])
    pods = Table("NAMESPACE", "POD", "NODE", "IP", "ENROLLED", "APP", title="pods", title_justify="left")
    for p in st["pods"]:  # type: ignore[attr-defined]
        pods.add_row(p["namespace"], p["name"], p["node"], p["ip"], "yes" if p["enrolled"] else "no", p["app"])
    console.print(nodes, pods)


@lab.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@lab_id_option
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in the netns and cgroup of a pod (NAME or NAMESPACE/NAME) or a node.

    \b
    meshlet lab exec web-1a -- curl -s http://10.244.1.2:8080/
    meshlet lab exec node1 -- ip route
    """
    _need_root()
    netns, cgroup = cluster.target(_lab_id(ctx), name)
    if command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("no command given after --")
    kernel.cgroup_join(cgroup)
    # exec in place: the command gets our terminal, and its exit code is ours.
    os.execvp("nsenter", [*processes.in_netns(netns), *command])


@lab.command()
@lab_id_option
@click.option("--fresh", is_flag=True, help="Recreate the lab even if it is already up.")
@click.option(
    "--source",
    type=click.Choice(["file", "kubernetes"]),
    default="file",
    show_default=True,
    help="For a new lab: a store directory, or a Kubernetes API server (see `lab up --source`).",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def demo(ctx: click.Context, fresh: bool, source: str, output: str) -> None:
    """Bring the lab up (2 nodes x 2 pods) if needed, send traffic between all pods, report it."""
    _need_root()
    lab_id = _lab_id(ctx)
    try:
        state = cluster.load(lab_id)
        if fresh or not state.ready or state.plan.source != source:
            raise cluster.LabError("recreate")
    except cluster.LabError:
        with progress.status(f"bringing up lab {lab_id!r}"):
            state = cluster.up(lab_id, 2, 2, "auto", source=source)
    status = cluster.status(lab_id)
    enrolled = {(p["namespace"], p["name"]) for p in status["pods"] if p["enrolled"]}
    if output == "json":
        calls = traffic(state.plan, enrolled)
        report = {"calls": [c.to_json() for c in calls], "ztunnels": ztunnel_summary(state.plan)}
        click.echo(json.dumps(report, indent=2))
        sys.exit(0 if all(c.ok for c in calls) else 1)
    _print_status(status)
    with progress.status("every pod calls every other pod with curl"):
        calls = traffic(state.plan, enrolled)
    demo_view.print_demo(console, state, calls)
    if not all(c.ok for c in calls):
        sys.exit(1)
