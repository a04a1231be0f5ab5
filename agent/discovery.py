"""Finding a pod's network namespace from its IP, the way a node agent must when pods already run.

Candidates are the named namespaces (`/var/run/netns/*`, where CNIs and our lab put them) and every
process's `/proc/PID/ns/net` (pods started by a runtime that names nothing). Each distinct netns (by
inode) is entered once, its IPv4 addresses listed over a netlink socket opened inside it, and the
result indexed by IP. The agent's own netns (the node's) is skipped: a pod IP is never the node's.
Blocking (it enters namespaces and talks netlink): call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from meshlet_contracts.netns import NetnsError, entered, inode

NAMED = Path("/var/run/netns")


@dataclass(frozen=True, slots=True)
class FoundNetns:
    """A netns that holds a pod IP: a path that stays valid while the pod lives, and its inode."""

    path: Path
    inode: int


def _candidates() -> dict[int, Path]:
    found: dict[int, Path] = {}
    own = inode("/proc/self/ns/net")
    paths: list[Path] = sorted(NAMED.iterdir()) if NAMED.is_dir() else []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        paths.append(Path(f"/proc/{pid}/ns/net"))
    for path in paths:
        try:
            ino = inode(path)
        except OSError:
            continue  # the process exited, or the name was removed, while we looked
        if ino != own:
            found.setdefault(ino, path)  # a name (listed first) is the more stable handle
    return found


def _addresses(path: Path) -> list[str]:
    with entered(path):
        ipr = IPRoute()  # the netlink socket belongs to the netns it was opened in
    with contextlib.closing(ipr):
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)]


def netns_by_ip() -> dict[str, FoundNetns]:
    """Every IPv4 address outside loopback -> the netns that holds it."""
    index: dict[str, FoundNetns] = {}
    for ino, path in _candidates().items():
        try:
            addresses = _addresses(path)
        except (OSError, NetnsError):
            continue
        for ip in addresses:
            if not ip.startswith("127."):
                index.setdefault(ip, FoundNetns(path, ino))
    return index
