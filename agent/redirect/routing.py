"""What both redirection backends install in a pod netns so that the app's replies to a caller's IP
come back to ztunnel: `ip rule fwmark 0x111 lookup 100` and `local 0.0.0.0/0 dev lo` in table 100.

ztunnel connects to the app from the caller's IP (IP_TRANSPARENT) with socket mark 0x111. The app's
side of that connection must carry the same mark for its packets to take table 100: the iptables
backend gets it there with connmark rules, the eBPF backend with `net.ipv4.tcp_fwmark_accept=1`
(an accepted socket takes the mark of the SYN that opened it).

Rules, routes and sysctls are read and written over a netlink socket (and /proc/sys files) opened inside
the pod's netns, not by forking `nsenter ip ...`: every reconcile pass checks every pod, and three forks
per pod every two seconds cost a core at a hundred pods. `in_netns` still runs the tools with no API
(iptables-save/restore, tc). All calls block: the agent calls them from a worker thread.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshlet_contracts.netns import NetnsError, entered
from meshlet_contracts.ports import REPLY_TABLE as ROUTE_TABLE
from meshlet_contracts.ports import TRANSPARENT_MARK as APP_MARK

MARK_MASK = 0xFFF
RULE_PREF = 32764
RTN_LOCAL = 2
SCOPE_HOST = 254
PROC_SYS = Path("/proc/sys")


class RedirectError(RuntimeError):
    """Rules could not be installed, checked or removed; the message names the pod netns and the tool's
    own words."""


def in_netns(netns: Path, cmd: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(["nsenter", f"--net={netns}", *cmd], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RedirectError(f"{' '.join(cmd)} in {netns} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


@contextlib.contextmanager
def _netlink(netns: Path) -> Iterator[IPRoute]:
    """A netlink socket of the pod's netns (a socket keeps the netns it was opened in)."""
    try:
        with entered(netns):
            ipr = IPRoute()
    except (OSError, NetnsError) as exc:
        raise RedirectError(f"cannot open netlink in {netns}: {exc}") from None
    try:
        yield ipr
    except NetlinkError as exc:
        raise RedirectError(f"netlink in {netns}: {exc}") from None
    finally:
        ipr.close()


def _rule_present(ipr: IPRoute) -> bool:
    return any(
        r.get_attr("FRA_PRIORITY") == RULE_PREF and (r.get_attr("FRA_TABLE") or r["table"]) == ROUTE_TABLE
        for r in ipr.get_rules(family=socket.AF_INET)
    )


def _table_routes(ipr: IPRoute) -> list[Any]:
    return [r for r in ipr.get_routes(family=socket.AF_INET, table=ROUTE_TABLE)
            if (r.get_attr("RTA_TABLE") or r["table"]) == ROUTE_TABLE]  # fmt: skip


def _present(ipr: IPRoute) -> bool:
    """The rule and the local default route in table 100, both."""
    return _rule_present(ipr) and any(r["type"] == RTN_LOCAL and r["dst_len"] == 0 for r in _table_routes(ipr))


def route_present(netns: Path) -> bool:
    with _netlink(netns) as ipr:
        return _present(ipr)


def install_route(netns: Path) -> None:
    with _netlink(netns) as ipr:
        if _present(ipr):
            return
        _remove(ipr)
        ipr.rule("add", fwmark=APP_MARK, fwmask=MARK_MASK, priority=RULE_PREF, table=ROUTE_TABLE,
                 family=socket.AF_INET)  # fmt: skip
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.route("replace", dst="0.0.0.0", dst_len=0, type=RTN_LOCAL, scope=SCOPE_HOST, oif=lo, table=ROUTE_TABLE,
                  family=socket.AF_INET)  # fmt: skip


def remove_route(netns: Path) -> None:
    with _netlink(netns) as ipr:
        _remove(ipr)


def _remove(ipr: IPRoute) -> None:
    for rule in ipr.get_rules(family=socket.AF_INET):
        if rule.get_attr("FRA_PRIORITY") == RULE_PREF:
            ipr.rule("del", priority=RULE_PREF, family=socket.AF_INET)
    if _table_routes(ipr):
        ipr.flush_routes(table=ROUTE_TABLE, family=socket.AF_INET)


def sysctls(netns: Path, names: list[str]) -> dict[str, str]:
    """The values of `names` (`net.ipv4.tcp_fwmark_accept`) in the pod's netns, read from /proc/sys."""
    try:
        with entered(netns):  # /proc/sys/net shows the netns of the thread that opens the file
            return {n: (PROC_SYS / n.replace(".", "/")).read_text().strip() for n in names}
    except (OSError, NetnsError) as exc:
        raise RedirectError(f"reading {', '.join(names)} in {netns}: {exc}") from None


def set_sysctls(netns: Path, values: dict[str, str]) -> None:
    try:
        with entered(netns):
            for name, value in values.items():
                (PROC_SYS / name.replace(".", "/")).write_text(value)
    except (OSError, NetnsError) as exc:
        raise RedirectError(f"setting {', '.join(values)} in {netns}: {exc}") from None
