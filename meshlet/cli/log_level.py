"""`meshlet log-level LEVEL`: a component's log level changed at runtime, through its own admin endpoint.

ztunnel's `POST /logging?level=` (its localhost admin port, from inside the node's netns in a lab) and the
agent's `POST /v1/logging?level=` (its 0600 status socket): on every node of a lab, the one `--node` names, or
this host's node. Control's level is its `--log-level` flag: its only HTTP port besides the nodes' is the
unauthenticated operators' one, where a runtime switch would let anyone who reaches it flood the log.
"""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.status import set_log_level
from meshlet.cli.endpoints import EndpointError, NodeEndpoints, ztunnel_request
from meshlet.cli.node import node_options, targets
from meshlet_contracts.log_levels import LEVELS

console = Console()
COMPONENTS = ("agent", "ztunnel")


def _agent(ep: NodeEndpoints, level: str) -> dict[str, Any]:
    try:
        return {"level": set_log_level(ep.agent_socket, level)}
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return {"error": f"the agent on {ep.agent_socket}: {exc}"}


def _ztunnel(ep: NodeEndpoints, level: str) -> dict[str, Any]:
    try:
        status, body = ztunnel_request(ep, "POST", f"/logging?level={quote(level)}")
    except EndpointError as exc:
        return {"error": str(exc)}
    text = body.decode(errors="replace").strip()
    if status != 200:
        return {"error": f"ztunnel answered HTTP {status}: {text}"}
    return {"level": text.splitlines()[0].removeprefix("level: ")}


@click.command("log-level")
@click.argument("level", type=click.Choice(LEVELS, case_sensitive=False))
@node_options
@click.option("--component", type=click.Choice([*COMPONENTS, "all"]), default="all", show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def log_level(level: str, lab_id: str, node: str | None, agent_socket: Path | None, component: str,
              output: str) -> None:  # fmt: skip
    """Set the log level of the agent and ztunnel (every node of a lab, or --node's, or this host's) at runtime.

    Exits 1 when a component could not be reached or refused.
    """
    wanted = COMPONENTS if component == "all" else (component,)
    report: dict[str, Any] = {"level": level.lower(), "nodes": {}}
    for ep in targets(lab_id, node, agent_socket):
        setters = {"agent": _agent, "ztunnel": _ztunnel}
        report["nodes"][ep.node or "this host"] = {c: setters[c](ep, level.lower()) for c in wanted}
    answers = [a for parts in report["nodes"].values() for a in parts.values()]
    ok = all("error" not in a for a in answers)
    if output == "json":
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        table = Table("NODE", "COMPONENT", "LEVEL")
        for name, parts in report["nodes"].items():
            for comp, answer in parts.items():
                table.add_row(name, comp, answer.get("level") or f"[red]{escape(answer['error'])}[/red]")
        console.print(table)
    sys.exit(0 if ok else 1)
