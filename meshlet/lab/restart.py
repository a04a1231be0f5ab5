"""`meshlet lab restart NODE ztunnel|agent [--overlap]`: upgrade a node's component in place.

Plain restart (ztunnel or agent): SIGTERM the running process, wait for it to exit (a ztunnel drains for
up to its `--drain-timeout` first), start the same argv again, wait until it is ready. With `--overlap`
(ztunnel only, the zero-downtime upgrade): start the new ztunnel beside the old one, wait until it is ready
and the agent has handed it the node (the agent's status names its pid as the ZDS owner); the old one,
told `superseded`, drains and exits on its own. Until it has, it stays recorded in lab.json under
`previous/...`, so nothing outlives `lab down` (which also ends whatever is left in the lab's cgroups).
"""

from __future__ import annotations

import http.client
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.status import read_status
from meshlet.lab import processes
from meshlet.lab.cluster import LabError, load
from meshlet.lab.mesh import ZTUNNEL_READY_PORT, node_run_dir
from meshlet.lab.plan import NodePlan
from meshlet.lab.state import LabState, locked

COMPONENTS = ("ztunnel", "agent")
READY_TIMEOUT = 30.0
EXIT_TIMEOUT = 70.0
"""A plain restart waits this long for the old process to drain and exit before SIGKILL (ztunnel's
drain limit is 10 s in the lab, 60 s for an upgrade)."""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class Restarted:
    """What a restart did (`meshlet lab restart -o json` prints it)."""

    node: str
    component: str
    overlap: bool
    old_pid: int | None
    new_pid: int
    ready_seconds: float
    old_exited: bool
    """Whether the old process had exited when the command returned (always, without --overlap)."""

    def line(self) -> str:
        old = f"pid {self.old_pid}" if self.old_pid is not None else "nothing running"
        how = "beside the old one" if self.overlap else "after the old one exited"
        tail = "" if self.old_exited else f"; pid {self.old_pid} drains and exits on its own"
        return (f"{self.component} on {self.node}: {old} -> pid {self.new_pid}, started {how}, "
                f"ready in {self.ready_seconds:.2f}s{tail}")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def restart(lab_id: str, node_name: str, component: str, overlap: bool = False) -> Restarted:
    if component not in COMPONENTS:
        raise LabError(f"unknown component {component!r}: one of {', '.join(COMPONENTS)}")
    if overlap and component != "ztunnel":
        raise LabError("--overlap upgrades a ztunnel beside the running one; an agent is restarted in place")
    state = load(lab_id)
    node = _node(state, node_name)
    key = f"{component}/{node.name}"
    old = state.processes.get(key)
    if old is None:
        raise LabError(f"lab {lab_id!r} runs no {key} (started with --no-node-daemons?)")
    old_running = processes.is_running(old)
    if old_running and not overlap:
        _terminate(old)
    started_at = time.monotonic()
    new = processes.spawn(list(old.argv), None, node.cgroup, Path(old.log))  # argv holds the nsenter prefix
    try:
        if component == "ztunnel":
            _wait_ztunnel(state, node, new)
        else:
            _wait_agent(state, node, new)
        ready = time.monotonic() - started_at
    finally:  # recorded once ready (or failed): the lock it takes is every lab's, held by any `lab up`
        _record(lab_id, key, new, old if overlap and old_running else None)
    return Restarted(
        node=node.name,
        component=component,
        overlap=overlap,
        old_pid=old.pid if old_running else None,
        new_pid=new.pid,
        ready_seconds=round(ready, 3),
        old_exited=not (old_running and processes.is_running(old)),
    )


def _node(state: LabState, name: str) -> NodePlan:
    for node in state.plan.nodes:
        if node.name == name:
            return node
    known = ", ".join(n.name for n in state.plan.nodes)
    raise LabError(f"no node {name!r} in lab {state.plan.lab_id!r}; known: {known}")


def _terminate(old: processes.Started) -> None:
    """SIGTERM, then wait for the exit (SIGKILL after EXIT_TIMEOUT)."""
    os.kill(old.pid, signal.SIGTERM)
    deadline = time.monotonic() + EXIT_TIMEOUT
    while processes.is_running(old):
        if time.monotonic() > deadline:
            os.kill(old.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
        time.sleep(0.05)


def _record(lab_id: str, key: str, new: processes.Started, previous: processes.Started | None) -> None:
    """Point `key` at the new process; keep a still draining old one as `previous/<key>/<pid>` (those that
    have exited are dropped). Re-read under the lock: `lab apply` may have written lab.json meanwhile."""
    with locked():
        state = load(lab_id)
        for name, started in list(state.processes.items()):
            if name.startswith("previous/") and not processes.is_running(started):
                del state.processes[name]
        if previous is not None:
            state.processes[f"previous/{key}/{previous.pid}"] = previous
        state.processes[key] = new
        state.save()


def _agent_status(state: LabState, node: NodePlan) -> dict[str, Any] | None:
    try:
        return read_status(node_run_dir(state, node.name) / "agent.sock", timeout=1)
    except (OSError, http.client.HTTPException, ValueError):
        return None


def _settled(status: dict[str, Any]) -> bool:
    return all(p["state"] == "captured" for p in status["pods"] if p["enrolled"])


def _ztunnel_ready(node: NodePlan) -> bool:
    try:
        with _DIRECT.open(f"http://{node.ip}:{ZTUNNEL_READY_PORT}/healthz/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return False


def _wait_ztunnel(state: LabState, node: NodePlan, new: processes.Started) -> None:
    """The new ztunnel owns the node (the agent handed it every pod: listeners open) and says it is ready."""

    def done() -> bool:
        status = _agent_status(state, node)
        if status is None or status["ztunnel"].get("pid") != new.pid or not status["ztunnel"]["connected"]:
            return False
        return _settled(status) and _ztunnel_ready(node)

    _wait(new, done, f"the new ztunnel on {node.name} owning the node and ready")


def _wait_agent(state: LabState, node: NodePlan, new: processes.Started) -> None:
    """The new agent answers, has a ztunnel connected and every enrolled pod captured."""

    def done() -> bool:
        status = _agent_status(state, node)
        return status is not None and bool(status["ztunnel"]["connected"]) and _settled(status)

    _wait(new, done, f"the new agent on {node.name} ready")


def _wait(new: processes.Started, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not processes.is_running(new):
            raise LabError(f"pid {new.pid} exited while waiting for {what}:{_tail(new.log)}")
        if done():
            return
        time.sleep(0.05)
    raise LabError(f"timed out after {READY_TIMEOUT:.0f}s waiting for {what}:{_tail(new.log)}")


def _tail(log: str, lines: int = 12) -> str:
    try:
        text = Path(log).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return " (no log)"
    return "\n  " + "\n  ".join(text)
