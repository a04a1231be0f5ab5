"""`meshlet version`: the build of every part, so a half-done upgrade shows: the CLI's own, control's, and each
node's agent and ztunnel (each reports it in its status). On a lab every node is asked; elsewhere this host's
node (control's operator port is known only in a lab). A part that does not answer is listed with why, and the
command exits 1; `-o json` keeps the same shape for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from meshlet.cli.endpoints import EndpointError, NodeEndpoints, agent_status, config_dump, control_status
from meshlet.cli.node import targets
from meshlet_contracts import build

console = Console()


def _asked(read: Any) -> dict[str, Any]:
    try:
        answer = read()
    except EndpointError as exc:
        return {"error": str(exc)}
    return dict(answer["build"]) if answer is not None and "build" in answer else {"error": "no build in its status"}


def gather(asked: list[NodeEndpoints]) -> dict[str, Any]:
    """{cli, lab, control (None off a lab), nodes: {node: {agent, ztunnel}}}: each part's {version, python} or
    {error}."""
    first = asked[0]
    report: dict[str, Any] = {"cli": build.build(), "lab": first.lab, "nodes": {}}
    report["control"] = _asked(lambda: control_status(first)) if first.control_metrics else None
    for ep in asked:
        report["nodes"][ep.node or "this host"] = {
            "agent": _asked(lambda ep=ep: agent_status(ep)),
            "ztunnel": _asked(lambda ep=ep: config_dump(ep)),
        }
    return report


def _parts(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    parts = [("cli", "-", report["cli"])]
    if report["control"] is not None:
        parts.append(("control", "-", report["control"]))
    for node, components in report["nodes"].items():
        parts += [(name, node, answer) for name, answer in components.items()]
    return parts


@click.command()
@click.option("--lab", "lab_id", envvar="MESHLET_LAB", default="demo", show_default=True,
              help="The local lab whose parts to ask. Env: MESHLET_LAB.")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def version(lab_id: str, output: str) -> None:
    """The version of the CLI, control, and each node's agent and ztunnel. Exits 1 if a part does not answer."""
    report = gather(targets(lab_id, None, None))
    ok = all("error" not in answer for _, _, answer in _parts(report))
    if output == "json":
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        table = Table("PART", "NODE", "VERSION", "DETAIL", title=f"lab {report['lab']}" if report["lab"] else None,
                      title_justify="left")  # fmt: skip
        for name, node, answer in _parts(report):
            if "error" in answer:
                table.add_row(name, node, "[red]no answer[/red]", escape(answer["error"]))
            else:
                table.add_row(name, node, answer["version"], f"python {answer['python']}")
        console.print(table)
    sys.exit(0 if ok else 1)
