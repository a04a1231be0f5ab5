"""Kernel objects of the lab: network namespaces, links and addresses (through `ip`), sysctls, cgroups.

`ip` is driven with `-batch` so a node or a pod is set up in one process per netns; a failing line
raises `KernelError` with the command and what `ip` said. Entering a netns (`entered`) uses setns(2) on
the calling thread: sockets created inside keep that netns after we switch back, which is how the CLI
talks to pods without forking a helper (see `agent.netns`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from meshlet_contracts import netns as netns_mod

NETNS_DIR = Path("/var/run/netns")


class KernelError(RuntimeError):
    """A kernel operation failed; the message names the command and the kernel's answer."""


def run(cmd: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise KernelError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {detail}")
    return proc.stdout


def ip_batch(lines: Iterable[str], netns: str | None = None) -> None:
    """Run `ip` commands (without the leading `ip`) in one process, inside `netns` if given."""
    script = "\n".join(lines) + "\n"
    run(["ip", *(["-n", netns] if netns else []), "-batch", "-"], stdin=script)


def netns_list() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def netns_add(name: str) -> None:
    run(["ip", "netns", "add", name])


def netns_delete(name: str) -> None:
    """Delete a netns; its links go with it (and a veth's peer with them)."""
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "delete", name])


def netns_pids(name: str) -> list[int]:
    if not (NETNS_DIR / name).exists():
        return []
    return [int(p) for p in run(["ip", "netns", "pids", name]).split()]


def links(netns: str | None = None) -> list[dict[str, Any]]:
    out = run(["ip", *(["-n", netns] if netns else []), "-j", "link", "show"])
    parsed: list[dict[str, Any]] = json.loads(out or "[]")
    return parsed


def link_delete(name: str) -> None:
    with contextlib.suppress(KernelError):
        run(["ip", "link", "delete", name])


def routes(netns: str | None = None) -> list[dict[str, Any]]:
    out = run(["ip", *(["-n", netns] if netns else []), "-j", "route", "show"])
    parsed: list[dict[str, Any]] = json.loads(out or "[]")
    return parsed


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the body with this thread in the named `netns`; sockets created there stay in it afterwards."""
    with netns_mod.entered(NETNS_DIR / netns):
        yield


def sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-netns sysctl; /proc/sys/net follows the opening thread's netns."""
    path = Path("/proc/sys") / key.replace(".", "/")
    with entered(netns):
        path.write_text(value)


def gratuitous_arp(netns: str, ifname: str, ip: str) -> None:
    """Announce that `ip` is at `ifname`'s MAC (an ARP request for itself, broadcast), as the bridge CNI plugin
    does for a new pod: neighbours still holding the MAC of a pod that had the IP before update their entry
    instead of sending it frames for a MAC nobody has until the entry is probed again (about a minute)."""
    with entered(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            sock.bind((ifname, 0))
        except BaseException:
            sock.close()
            raise
    with sock:
        mac, addr = sock.getsockname()[4], socket.inet_aton(ip)
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + bytes(6) + addr  # who-has ip, tell ip
        sock.send(b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)


# --- cgroup v2 --------------------------------------------------------------------------------


def cgroup_root() -> Path:
    """The cgroup v2 mount: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones."""
    for cand in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (cand / "cgroup.procs").exists() and (cand / "cgroup.controllers").exists():
            return cand
    raise KernelError("no cgroup v2 hierarchy found at /sys/fs/cgroup or /sys/fs/cgroup/unified")


def cgroup_path(rel: str) -> Path:
    return cgroup_root() / rel


def cgroup_create(rel: str) -> Path:
    path = cgroup_path(rel)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cgroup_join(rel: str, pid: int = 0) -> None:
    """Move `pid` (0: the caller) into the cgroup; used between fork and exec of lab processes."""
    (cgroup_path(rel) / "cgroup.procs").write_text(str(pid))


def cgroup_pids(path: Path) -> list[int]:
    """Processes in `path` and every cgroup below it."""
    pids: list[int] = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(FileNotFoundError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def cgroup_stop(path: Path, grace: float = 3.0) -> None:
    """End every process in the cgroup tree: SIGTERM, then cgroup.kill after `grace` seconds."""
    if not path.exists():
        return
    for pid in cgroup_pids(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while cgroup_pids(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if cgroup_pids(path):
        # cgroup.kill (Linux 5.14) kills the whole subtree atomically, racing no fork.
        (path / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + 5.0
        while cgroup_pids(path):
            if time.monotonic() > deadline:
                raise KernelError(f"processes {cgroup_pids(path)} in {path} survived cgroup.kill")
            time.sleep(0.05)


def cgroup_remove(path: Path) -> None:
    """Remove an (empty) cgroup tree, deepest first."""
    if not path.exists():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    path.rmdir()
