"""The operator's commands: `meshlet status`, `check`, `workloads`, `services`, `policies`, `routes`, `certs`,
`connections` and `label`. They work on this host's node, or with `--node NAME` on a node of the local
lab (`--lab`, default from MESHLET_LAB or `demo`). Tables for people, `-o json|yaml` for scripts.
On a Kubernetes cluster: `status --kubeconfig|--cluster` aggregates every node (cluster_status.py), `check
--pre-install` checks the cluster before an install (precheck.py), and `label` patches the cluster's objects
when `--kubeconfig` is given or KUBECONFIG is set.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import yaml
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from meshlet.cli import inspect
from meshlet.cli import routes as routes_view
from meshlet.cli.checks import checks_report, print_checks, run_checks
from meshlet.cli.endpoints import EndpointError, NodeEndpoints, config_dump, lab_nodes, resolve
from meshlet.cli.kubecli import api_client, cluster_requested, kubeconfig_option
from meshlet.cli.label import LabelError, parse_changes, relabel, relabel_cluster
from meshlet.cli.status import gather, lab_report, lines
from meshlet.lab.state import LabState

console = Console()
progress = Console(stderr=True)  # spinners on stderr: stdout stays clean for -o json


def node_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--node", help="A node of the local lab (default: its first node).")(f)
    f = click.option("--lab", "lab_id", envvar="MESHLET_LAB", default="demo", show_default=True,
                     help="The local lab to look in. Env: MESHLET_LAB.")(f)  # fmt: skip
    f = click.option("--agent-socket", type=click.Path(path_type=Path),
                     help="The agent's status socket (default /var/run/meshlet/agent.sock on a node).")(f)  # fmt: skip
    return f


def output_option(f: Callable[..., Any], formats: tuple[str, ...] = ("table", "json", "yaml")) -> Callable[..., Any]:
    return click.option("-o", "--output", type=click.Choice(formats), default=formats[0], show_default=True)(f)


def lab_named() -> bool:
    """Whether the user named the lab (--lab, MESHLET_LAB) rather than leaving the default `demo`: a named lab
    must be up."""
    source = click.get_current_context().get_parameter_source("lab_id")
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def node_endpoints(lab_id: str, node: str | None, agent_socket: Path | None) -> NodeEndpoints:
    try:
        return resolve(lab_id, node, agent_socket, lab_named())
    except EndpointError as exc:
        raise click.ClickException(str(exc)) from None


def targets(lab_id: str, node: str | None, agent_socket: Path | None) -> list[NodeEndpoints]:
    """The nodes a command asks: every node of the lab when it is up and neither --node nor --agent-socket is
    given, else the one node they name (or this host's)."""
    names = lab_nodes(lab_id) if node is None and agent_socket is None else None
    if names:
        return [node_endpoints(lab_id, name, None) for name in names]
    return [node_endpoints(lab_id, node, agent_socket)]


def _emit(data: Any, output: str) -> bool:
    """Print `data` for machines; False when the caller should draw its table instead."""
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return True
    if output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=True), nl=False)
        return True
    return False


def _table(rows: list[tuple[str, str, bool | None]], problems: list[str], warnings: Sequence[str] = ()) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    for label, text, ok in rows:
        mark = "" if ok is None else ("[green]OK[/green] " if ok else "[red]!![/red] ")
        table.add_row(f"[bold]{label}[/bold]", mark + text)
    console.print(table)
    for problem in problems:
        console.print(f"[red]problem:[/red] {problem}", highlight=False)
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def _cluster_status(kubeconfig: Path | None, namespace: str, output: str) -> None:
    from meshlet.cli import cluster_status

    with progress.status("asking the cluster"):
        report = cluster_status.gather(api_client(kubeconfig), namespace)
    if not _emit(report, output):
        _table(cluster_status.rows(report), report["problems"], report["warnings"])
    sys.exit(0 if report["healthy"] else 1)


@click.command()
@node_options
@output_option
@kubeconfig_option
@click.option("--cluster", is_flag=True, help="The cluster install (every node), not one node.")
@click.option("--namespace", "install_namespace", default="meshlet-system", show_default=True,
              help="With --cluster: the install's namespace.")  # fmt: skip
def status(lab_id: str, node: str | None, agent_socket: Path | None, output: str, kubeconfig: Path | None,
           cluster: bool, install_namespace: str) -> None:  # fmt: skip
    """Agent, ztunnel, control, pods, certificates, traffic: of every node of a lab (then the problems), of one
    with --node, or of this host's node off a lab. Exits 1 if anything is unhealthy.

    With --kubeconfig or --cluster (kubectl's kubeconfig): the cluster install, every node at once.
    """
    if cluster or kubeconfig is not None:
        _cluster_status(kubeconfig, install_namespace, output)
    asked = targets(lab_id, node, agent_socket)
    if asked[0].lab is not None and node is None:  # a lab, no --node: all of it at once
        reports = []
        for ep in asked:
            with progress.status(f"asking node {ep.node}"):
                reports.append(gather(ep))
        whole = lab_report(reports, lab_id)
        if not _emit(whole, output):
            for report in reports:
                _table(lines(report), [])
                console.print()
            _table([("Lab", f"{lab_id}: {len(reports)} nodes, {'healthy' if whole['healthy'] else 'problems'}",
                     whole["healthy"])], whole["problems"], whole["warnings"])  # fmt: skip
        sys.exit(0 if whole["healthy"] else 1)
    [ep] = asked
    with progress.status(f"asking node {ep.node or 'here'}"):
        report = gather(ep)
    if not _emit(report, output):
        _table(lines(report), report["problems"], report["warnings"])
    sys.exit(0 if report["healthy"] else 1)


def _pre_install(kubeconfig: Path | None, sets: tuple[str, ...], output: str) -> None:
    from daemonset import Values, ValuesError
    from meshlet.cli import precheck

    try:
        redirect = Values().with_sets(sets).redirect
    except ValuesError as exc:
        raise click.UsageError(str(exc)) from None
    with progress.status("checking the cluster"):
        results = precheck.run(api_client(kubeconfig), redirect)
    failed = [r for r in results if r.level == "fail"]
    if not _emit({"ok": not failed, "results": [r.to_json() for r in results]}, output):
        marks = {"pass": "[green]\u2714[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]\u2718[/red]"}
        for r in results:
            console.print(f"  {marks[r.level]} {r.name}: {r.detail}", highlight=False)
            if r.hint and r.level != "pass":
                console.print(f"      [yellow]hint:[/yellow] {r.hint}", highlight=False)
        warned = sum(r.level == "warn" for r in results)
        verdict = f"{len(failed)} failures, {warned} warnings"
        console.print(f"[red]{verdict}: fix the failures before installing[/red]" if failed
                      else f"[green]ready to install ({verdict})[/green]")  # fmt: skip
    sys.exit(1 if failed else 0)


@click.command()
@node_options
@output_option
@click.option("--pre-install", is_flag=True, help="Check a cluster before `meshlet install` (version, nodes, CNI).")
@kubeconfig_option
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="With --pre-install: the install's values.")
def check(lab_id: str, node: str | None, agent_socket: Path | None, output: str, pre_install: bool,
          kubeconfig: Path | None, sets: tuple[str, ...]) -> None:  # fmt: skip
    """Check the kernel, tools and the node's components: a hint and a README section for what fails or warns.

    Exits 1 on a failure; a warning (what only the eBPF backend needs) does not.

    With --pre-install: whether the cluster (of --kubeconfig, or kubectl's) can run meshlet.
    """
    if pre_install:
        _pre_install(kubeconfig, sets, output)
    ep = node_endpoints(lab_id, node, agent_socket)
    with progress.status("checking"):
        groups = run_checks(ep)
    data = checks_report(groups)
    if not _emit(data, output):
        print_checks(groups, console)
    sys.exit(0 if data["ok"] else 1)


def _inspect_command(
    kind: str, rows_of: Callable[..., inspect.Rows], help_text: str, on: bool = False
) -> click.Command:
    @click.command(name=kind, help=help_text)
    @node_options
    @output_option
    @click.option("-n", "--namespace", help="Only this namespace.")
    def command(lab_id: str, node: str | None, agent_socket: Path | None, output: str, namespace: str | None,
                **extra: Any) -> None:  # fmt: skip
        ep = node_endpoints(lab_id, node, agent_socket)
        try:
            with progress.status(f"reading ztunnel's config on node {ep.node or 'here'}"):
                dump = config_dump(ep)
        except EndpointError as exc:
            raise click.ClickException(str(exc)) from None
        rows = rows_of(dump, namespace, **extra)
        if _emit(rows, output):
            return
        table = Table(*(title for title, _ in inspect.COLUMNS[kind]), title=f"{kind} (ztunnel on {dump['node']})",
                      title_justify="left", caption=inspect.CAPTIONS.get(kind), caption_justify="left")  # fmt: skip
        for row in rows:
            table.add_row(*(inspect.cell(row, key) for _, key in inspect.COLUMNS[kind]))
        console.print(table)

    if on:
        command = click.option("--on", "on_node", help="Only workloads running on this node.")(command)
    return command


workloads = _inspect_command("workloads", inspect.workloads, "Workloads the node's ztunnel knows.", on=True)
services = _inspect_command("services", inspect.services, "Services with their VIPs and endpoints.")
policies = _inspect_command("policies", inspect.policies, "AuthorizationPolicies and PeerAuthentications.")
routes = _inspect_command("routes", routes_view.rows, "HTTPRoutes per Service: rules, weighted backends, status.")
certs = _inspect_command("certs", inspect.certs, "Workload certificates held by the node's ztunnel.")
connections = _inspect_command("connections", inspect.connections, "Connections the node's ztunnel relays now.")


@click.command()
@click.argument("kind", type=click.Choice(["namespace", "pod"]))
@click.argument("name")
@click.argument("changes", nargs=-1, required=True)
@click.option("--lab", "lab_id", envvar="MESHLET_LAB", default="demo", show_default=True)
@click.option("--store", type=click.Path(path_type=Path), help="The store directory (default: the lab's).")
@kubeconfig_option
@click.option("-n", "--namespace", default="default", show_default=True, help="The pod's namespace (pods only).")
def label(kind: str, name: str, changes: tuple[str, ...], lab_id: str, store: Path | None,
          kubeconfig: Path | None, namespace: str) -> None:  # fmt: skip
    """Set (KEY=VALUE) or remove (KEY-) labels of a namespace (or a pod) in the local store, or on the cluster
    with --kubeconfig or KUBECONFIG set (a merge patch, as `kubectl label --overwrite`).

    \b
    meshlet label namespace plain meshlet.io/dataplane-mode=ambient
    meshlet label namespace plain meshlet.io/dataplane-mode-
    meshlet label pod web-1a -n mesh meshlet.io/dataplane-mode=none
    meshlet label --kubeconfig ~/.kube/config pod web-0 -n shop meshlet.io/dataplane-mode=none
    """
    try:
        parsed = parse_changes(changes)
    except LabelError as exc:
        raise click.ClickException(str(exc)) from None
    if store is None and not cluster_requested(kubeconfig):
        lab_state = LabState.load(lab_id)
        if lab_state is not None and lab_state.plan.source == "kubernetes":
            kubeconfig = Path(lab_state.directory) / "kubeconfig"  # the lab's cluster is its API server: label there
    if store is None and cluster_requested(kubeconfig):
        try:
            now = relabel_cluster(api_client(kubeconfig), kind, name, namespace, parsed)
        except LabelError as exc:
            raise click.ClickException(str(exc)) from None
        shown = ", ".join(f"{k}={v}" for k, v in sorted(now.items())) or "none"
        where = f" -n {namespace}" if kind == "pod" else ""
        console.print(f"{kind} {name}{where} labelled on the cluster; labels now: {shown}", highlight=False)
        return
    if store is None:
        state = LabState.load(lab_id)
        if state is None:
            raise click.ClickException(f"no lab {lab_id!r} is up; pass --store DIR for another store")
        store = state.store
    try:
        path, labels = relabel(store, kind.capitalize(), name, parsed, namespace if kind == "pod" else None)
    except LabelError as exc:
        raise click.ClickException(str(exc)) from None
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
    console.print(f"{kind} {name} labelled ({path.name}); labels now: {shown}", highlight=False)


COMMANDS = [status, check, workloads, services, policies, routes, certs, connections, label]
