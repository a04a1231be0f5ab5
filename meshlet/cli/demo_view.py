"""What `meshlet lab demo` prints: the calls in 80 columns, one sentence each on what to notice, control's and each
ztunnel's view of them, and where to look next (commands that name pods, never their IPs)."""

from __future__ import annotations

import json
import urllib.request

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from meshlet.lab.demo import Call, ztunnel_summary
from meshlet.lab.plan import LabPlan
from meshlet.lab.state import LabState

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def print_demo(console: Console, state: LabState, calls: list[Call]) -> None:
    plan = state.plan
    flag = "" if plan.lab_id == "demo" else f" --id {plan.lab_id}"
    console.print(calls_table(calls))
    _print_control(console, plan)
    for z in ztunnel_summary(plan):
        console.print(
            f"ztunnel {z['node']}: {z['mutualTls']} mTLS and {z['plaintext']} plaintext connections opened, "
            f"{z['errors']} failed; mTLS identities: {', '.join(z['principals']) or '-'}"
            + (f" [red]({z['error']})[/red]" if "error" in z else "")
        )
    last = plan.pods[-1].name
    console.print(
        "\n[bold]What this shows:[/bold] pods on two nodes reach each other across the node network, and each app "
        "sees its caller's pod IP. Namespace 'mesh' is enrolled: the agent on each node captures its pods' traffic "
        "into that node's ztunnel, which carries mesh-to-mesh calls over mTLS (HBONE, SPIFFE identities from "
        "control's CA) and passes other calls through in plaintext. Namespace 'plain' is not in the mesh.\n"
        f"\nThe lab keeps running (store and logs under {state.directory}). Look at it with:"
    )
    for command in (
        f"meshlet status{'' if not flag else f' --lab {plan.lab_id}'}",
        f"meshlet lab{flag} status",
        f"meshlet lab{flag} exec node1 -- curl -s 127.0.0.1:15000/config_dump",
        f"meshlet lab{flag} exec web-1a -- curl -s http://$(meshlet lab{flag} ip {last}):8080/",
        f"curl -s {plan.control_metrics}/debug/status",
    ):
        console.print(f"  [cyan]{command}[/cyan]", soft_wrap=True)  # whole, to copy and paste
    console.print(f"Tear it down with [cyan]meshlet lab{flag} down[/cyan]", soft_wrap=True)


def _print_control(console: Console, plan: LabPlan) -> None:
    try:
        with _DIRECT.open(f"{plan.control_metrics}/debug/status", timeout=2) as resp:
            st = json.load(resp)
    except (OSError, ValueError) as exc:
        console.print(f"[red]control at {plan.control_url} did not answer: {exc}[/red]")
        return
    workloads = ", ".join(f"{ns}: {n} pods" for ns, n in sorted(_pods_by_namespace(plan).items()))
    console.print(
        f"control {plan.control_url}: config version {st['version']}, {st['objects']} objects ({workloads}), "
        f"{len(st['proxies'])} proxies connected, {len(st['errors'])} store errors"
    )


def _pods_by_namespace(plan: LabPlan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pod in plan.pods:
        counts[pod.namespace] = counts.get(pod.namespace, 0) + 1
    return counts


NOTICE = {
    "mTLS": "mTLS between ztunnels; app saw caller's IP",
    "plaintext out of the mesh (passthrough)": "leaves the mesh in plaintext (passthrough)",
    "plaintext into the mesh (PERMISSIVE)": "enters the mesh in plaintext (PERMISSIVE)",
    "plaintext, no mesh": "no mesh on either side: plain TCP",
}
"""What to notice about a call, one short sentence per path (the demo's table fits 80 columns)."""


def calls_table(calls: list[Call]) -> Table:
    """One line per call: pod@node to pod@node, the HTTP status, and in one sentence what to notice."""
    table = Table(
        Column("FROM", no_wrap=True), Column("TO", no_wrap=True), Column("OK", no_wrap=True), "WHAT TO NOTICE",
        title="calls: every pod calls every other pod", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )  # fmt: skip
    for c in calls:
        path = "mTLS" if c.security.startswith("mTLS") else c.security
        table.add_row(
            f"{c.source.name}@{c.source.node}",
            f"{c.destination.name}@{c.destination.node}",
            "[green]200[/green]" if c.ok else f"[red]{c.status or 'no'}[/red]",
            NOTICE.get(path, path) if c.ok else f"[red]{escape(c.error)}[/red]",
        )
    return table
