"""The reliability suite's figures: recorded by the tests, merged into `results/latest.json`, rendered as the
table the README shows.

python -m tests.reliability.report            # print the table of results/latest.json (Markdown)
python -m tests.reliability.report --readme   # and put it into README.md, between the reliability markers

A run of part of the suite replaces only what it measured: each figure keeps the time and commit it was
measured at. Each row states its goal next to the figures; the tests assert only what must hold (nothing
failed, the change applied at all, a refusal is a refusal), never a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("MESHLET_RELIABILITY_RESULTS", REPO / "tests/reliability/results/latest.json"))
"""Where a run writes its figures; the variable lets a run elsewhere leave the committed file alone."""
BACKENDS = {"iptables": "iptables", "ebpf": "eBPF"}
README_BEGIN = "<!-- reliability table: python -m tests.reliability.report --readme -->"
README_END = "<!-- end of reliability table -->"

Entry = Mapping[str, Any]


def _failed(entry: Entry) -> str:
    return f"{entry['failed']} of {entry['requests']}"


def _kept(entry: Entry) -> str:
    kept = [name for name, ok in (("download", entry["download_kept"]), ("idle", entry["idle_kept"])) if ok]
    shown = f"{len(kept)} of 2" + (f" ({', '.join(kept)})" if len(kept) == 1 else "")
    # Kept how: still on the old ztunnel (serving what it holds until --upgrade-drain-timeout), or handed over.
    return shown + (", old ztunnel still serving" if kept and entry.get("old_ztunnel_running_after_idle_reuse") else "")


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 0.1 else f"{value:.2f} s"


def _stop(entry: Entry) -> str:
    took = _seconds(entry["control_exit_seconds"])
    return took if entry["control_exited_on_sigterm"] else f"> {took} (killed)"


def _ready(entry: Entry) -> str:
    return f"{_seconds(entry.get('new_ztunnel_ready_seconds'))} ({_seconds(entry['restart_seconds'])})"


def _refusal(entry: Entry) -> str:
    return f"{_seconds(entry['median_seconds'])} (max {_seconds(entry['max_seconds'])})"


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    """The measurement (a test's record) the row reads."""
    label: str
    goal: str
    show: Callable[[Entry], str]
    meaning: str
    """One sentence for the README."""


ROWS = (
    Row("destination_upgrade", "Destination ztunnel upgrade: new connections failed", "0", _failed,
        "short requests web-1a -> web-2a every 30 ms while `meshlet lab restart node2 ztunnel --overlap` runs"),
    Row("destination_upgrade", "Destination ztunnel upgrade: long connections kept", "2 of 2", _kept,
        "a download rate-limited to outlast ztunnel's plain drain timeout (`--drain-timeout`, 10 s in the lab) "
        "and an idle keep-alive connection asked again after it ended, both open across the upgrade: the "
        "connections a plain SIGTERM would reset at its drain deadline; \"old ztunnel still serving\": the old "
        "process was still up after the idle connection's second request (it serves what it holds for up to "
        "`--upgrade-drain-timeout`, 60 s), so they were kept, not handed over"),
    Row("source_upgrade", "Source ztunnel upgrade: new connections failed", "0", _failed,
        "as above, upgrading node1's ztunnel (the client's side)"),
    Row("source_upgrade", "Source ztunnel upgrade: long connections kept", "2 of 2", _kept,
        "as above, upgrading node1's ztunnel"),
    Row("destination_upgrade", "ztunnel upgrade: new ztunnel ready (whole command)", "< 1 s", _ready,
        "from the new ztunnel's start to the agent handing it the node and its readiness, as `meshlet lab restart "
        "node2 ztunnel --overlap -o json` reports it; in brackets the command's whole run, CLI start-up included"),
    Row("agent_kill", "Agent kill -9 and restart: new connections failed", "0", _failed,
        "the node agent of node1 is killed with SIGKILL under the same load and started again"),
    Row("control_outage", "Control outage, policy written meanwhile: new connections failed", "0", _failed,
        "control is stopped, a DENY policy (an unused port) is written to the store, control is started again"),
    Row("control_outage", "Control outage: policy at every ztunnel after control is ready", "< 1 s",
        lambda e: _seconds(e["ready_to_applied_seconds"]),
        "from control's /ready answering to every ztunnel's config_dump holding the policy written during the outage"),
    Row("control_outage", "Control exit on SIGTERM", "< 2 s", _stop,
        "from SIGTERM to control's exit (killed after 5 s, which ends the wait)"),
    Row("closed_port", "Connection to a closed port refused in", "< 0.5 s", _refusal,
        "curl's time_total from web-1a to a port nothing listens on at web-2a (enrolled): median, maximum in brackets"),
)  # fmt: skip


class Figures:
    """What this run measured, by backend and measurement; merged into RESULTS when the run ends."""

    def __init__(self) -> None:
        self.measured: dict[str, dict[str, dict[str, Any]]] = {}

    def record(self, backend: str, key: str, **values: Any) -> None:
        goals = {row.label: row.goal for row in ROWS if row.key == key}
        stamp = {"measured": datetime.now(UTC).isoformat(timespec="seconds"), "commit": _commit(), "goals": goals}
        self.measured.setdefault(backend, {})[key] = {**values, **stamp}

    def save(self, path: Path = RESULTS) -> dict[str, Any]:
        report = load(path)
        for backend, entries in self.measured.items():
            report["backends"].setdefault(backend, {}).update(entries)
        report["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return report


def load(path: Path = RESULTS) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        report = {}
    report.setdefault("suite", "tests/reliability (issue #17)")
    report.setdefault("backends", {})
    return report


def _commit() -> str:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return proc.stdout.strip() or "unknown"


def table(report: Mapping[str, Any]) -> str:
    """The Markdown table: a row per figure, its goal, a column per backend (n/a where not measured)."""
    backends = report["backends"]
    lines = ["| Measure | Goal | " + " | ".join(BACKENDS.values()) + " |", "|---|---|" + "---|" * len(BACKENDS)]
    for row in ROWS:
        cells = []
        for backend in BACKENDS:
            entry = backends.get(backend, {}).get(row.key)
            cells.append("n/a" if entry is None else row.show(entry))
        lines.append(f"| {row.label} | {row.goal} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def meanings() -> str:
    """One item per row: what it measures (the README's list under the table)."""
    items = (f"- *{row.label}*: {row.meaning}." for row in ROWS)
    return "\n".join(textwrap.fill(item, width=112, subsequent_indent="  ") for item in items)


def provenance(report: Mapping[str, Any]) -> str:
    """When and at which commits the figures were measured, and how the upgrades were made."""
    entries = [e for backend in report["backends"].values() for e in backend.values()]
    if not entries:
        return "No figures yet."
    days = sorted({e["measured"][:10] for e in entries})
    commits = sorted({e["commit"] for e in entries})
    hows = sorted({e["how"] for e in entries if "how" in e})
    line = f"Measured {', '.join(days)} at {', '.join(commits)} on the 2-core development VM"
    return textwrap.fill(line + (f"; restarts: {'; '.join(f'`{h}`' for h in hows)}." if hows else "."), width=112)


def readme_block(report: Mapping[str, Any]) -> str:
    return f"{README_BEGIN}\n{provenance(report)}\n\n{table(report)}\n\n{meanings()}\n{README_END}"


def update_readme(report: Mapping[str, Any], readme: Path = REPO / "README.md") -> None:
    text = readme.read_text()
    head, begin, rest = text.partition(README_BEGIN)
    _, end, tail = rest.partition(README_END)
    if not begin or not end:
        raise SystemExit(f"{readme} has no reliability markers ({README_BEGIN!r} ... {README_END!r})")
    readme.write_text(head + readme_block(report) + tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.report")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = p.parse_args(argv)
    report = load(args.results)
    print(table(report))
    if args.readme:
        update_readme(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
