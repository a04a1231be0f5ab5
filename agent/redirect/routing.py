"""What both redirection backends install in a pod netns so that the app's replies to a caller's IP
come back to ztunnel: `ip rule fwmark 0x111 lookup 100` and `local 0.0.0.0/0 dev lo` in table 100.

ztunnel connects to the app from the caller's IP (IP_TRANSPARENT) with socket mark 0x111. The app's
side of that connection must carry the same mark for its packets to take table 100: the iptables
backend gets it there with connmark rules, the eBPF backend with `net.ipv4.tcp_fwmark_accept=1`
(an accepted socket takes the mark of the SYN that opened it). All calls block (they run `ip` and
`sysctl` in the pod's netns): the agent calls them from a worker thread.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from meshlet_contracts.ports import REPLY_TABLE as ROUTE_TABLE
from meshlet_contracts.ports import TRANSPARENT_MARK as APP_MARK

MARK_MASK = 0xFFF
RULE_PREF = 32764


class RedirectError(RuntimeError):
    """Rules could not be installed, checked or removed; the message names the pod netns and the tool's
    own words."""


def in_netns(netns: Path, cmd: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(["nsenter", f"--net={netns}", *cmd], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RedirectError(f"{' '.join(cmd)} in {netns} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _table_routes(netns: Path) -> list[dict[str, object]]:
    try:
        routes: list[dict[str, object]] = json.loads(
            in_netns(netns, ["ip", "-j", "route", "show", "table", str(ROUTE_TABLE)]) or "[]"
        )
    except RedirectError as exc:
        if "table does not exist" in str(exc):  # nothing was ever routed there
            return []
        raise
    return routes


def route_present(netns: Path) -> bool:
    rules = json.loads(in_netns(netns, ["ip", "-j", "rule", "show"]) or "[]")
    has_rule = any(r.get("priority") == RULE_PREF and str(r.get("table")) == str(ROUTE_TABLE) for r in rules)
    has_route = any(r.get("type") == "local" and r.get("dst") == "default" for r in _table_routes(netns))
    return has_rule and has_route


def install_route(netns: Path) -> None:
    if route_present(netns):
        return
    remove_route(netns)
    fwmark = f"0x{APP_MARK:x}/0x{MARK_MASK:x}"
    in_netns(netns, ["ip", "rule", "add", "fwmark", fwmark, "pref", str(RULE_PREF), "lookup", str(ROUTE_TABLE)])
    in_netns(netns, ["ip", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE)])


def remove_route(netns: Path) -> None:
    rules = json.loads(in_netns(netns, ["ip", "-j", "rule", "show"]) or "[]")
    for r in rules:
        if r.get("priority") == RULE_PREF:
            in_netns(netns, ["ip", "rule", "del", "pref", str(RULE_PREF)])
    if _table_routes(netns):
        in_netns(netns, ["ip", "route", "flush", "table", str(ROUTE_TABLE)])
