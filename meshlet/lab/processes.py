"""Long-running lab processes: started inside a netns and a cgroup, detached from the CLI that started them.

A lab process outlives `meshlet lab up`, so it gets its own session and writes to a log file in the lab
directory. It joins its cgroup between fork and exec, before it can fork anything itself, so `down`
finds all of it (and only it) in the lab's cgroups. `ip netns exec` execs in place (no fork), so the PID
we record is the PID of the program.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from meshlet.lab import kernel

BYTECODE = {"PYTHONPYCACHEPREFIX": "/var/cache/meshlet/pycache", "PYTHONDONTWRITEBYTECODE": ""}
"""Lab daemons keep compiled bytecode in a cache of their own, even where the environment says not to write it
beside the sources (PYTHONDONTWRITEBYTECODE): recompiling every module on each start costs 0.2-0.5 s of a
ztunnel's start-up, which is what a restart's refusal window and readiness are made of."""


@dataclass(frozen=True, slots=True)
class Started:
    """A process the lab started; `starttime` tells it apart from a later process with a reused PID."""

    pid: int
    starttime: int
    argv: tuple[str, ...]
    log: str


def proc_starttime(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(started: Started) -> bool:
    return proc_starttime(started.pid) == started.starttime


def spawn(argv: list[str], netns: str | None, cgroup: str, log: Path, env: dict[str, str] | None = None) -> Started:
    """Start `argv` inside `netns` (None: the host's) and `cgroup`, detached, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full = [*in_netns(netns), *argv] if netns else argv

    def enter_cgroup() -> None:
        kernel.cgroup_join(cgroup)

    with open(log, "ab") as out:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=enter_cgroup,
            env={**os.environ, **BYTECODE, **(env or {})},
            close_fds=True,
        )
    starttime = proc_starttime(proc.pid)
    if starttime is None:
        raise kernel.KernelError(f"{argv[0]} exited at once; see {log}")
    # The child is reparented when we exit; drop the Popen so no ResourceWarning claims it was leaked.
    proc.returncode = 0
    return Started(pid=proc.pid, starttime=starttime, argv=tuple(full), log=str(log))


def in_netns(netns: str) -> list[str]:
    """The argv prefix that runs a command in a lab netns. nsenter rather than `ip netns exec`, which
    also remounts /sys and so hides cgroup v2 and bpffs from what it runs (the agent needs both)."""
    return ["nsenter", f"--net=/var/run/netns/{netns}", "--"]


def python_module(module: str, *args: str) -> list[str]:
    """argv for running a module of this installation with the same interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]
