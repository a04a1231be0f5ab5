"""What the reliability suite does to a lab: restart a node's ztunnel or agent (`meshlet lab restart`, as a
user would), stop and start control (which the command does not restart), read a ztunnel's admin port
quickly, run the bounded load in a pod and a rate-limited download.

Reading a node's admin port goes through `nsenter` + curl rather than `meshlet lab exec`: a poll then costs
~15 ms instead of a Python start-up, which is what lets the suite time a config change to tens of ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlet.lab import mesh
from meshlet.lab.processes import in_netns
from meshlet.lab.state import LabState, locked
from tests.conftest import wait_for
from tests.e2e.conftest import MESHLET, Lab
from tests.e2e.mesh_helpers import processes, running

REPO = Path(__file__).resolve().parents[2]
LOAD_LIMIT = 90.0
"""Seconds a load client runs at most, whatever happens to the test that started it."""
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def netns(lab: Lab, node: str) -> str:
    return str(next(n["netns"] for n in lab.status["nodes"] if n["name"] == node))


def admin_json(lab: Lab, node: str, path: str) -> subprocess.Popen[str]:
    """Start a GET of `path` on `node`'s ztunnel admin port (127.0.0.1:15000 in the node's netns)."""
    argv = [*in_netns(netns(lab, node)), "curl", "-sS", "-m", "2", f"http://127.0.0.1:15000{path}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def holds_policy(lab: Lab, name: str, namespace: str = "mesh") -> bool:
    """Every node's ztunnel holds the policy `namespace/name` (the nodes are asked at the same time)."""
    asks = [admin_json(lab, n["name"], "/config_dump") for n in lab.status["nodes"]]
    held = []
    for ask in asks:
        out, _ = ask.communicate(timeout=10)
        if ask.returncode != 0:
            return False
        policies = json.loads(out)["policies"]
        held.append(any((p["namespace"], p["name"]) == (namespace, name) for kind in policies.values() for p in kind))
    return all(held)


@dataclass
class Restarted:
    seconds: float
    """The command's whole run: it returns once the new process is ready and owns the node."""
    ready_seconds: float
    """From the new process's start to ready, as the command reports it (no CLI start-up, no lock wait)."""
    how: str
    """The command line."""


def restart(lab: Lab, node: str, daemon: str, overlap: bool = False, timeout: float = 120) -> Restarted:
    """Upgrade `node`'s `daemon` (ztunnel or agent) in place, as a user would: `meshlet lab restart`."""
    args = ["restart", node, daemon, *(["--overlap"] if overlap else [])]
    begun = time.monotonic()
    proc = lab.run(*args, "-o", "json", check=False, timeout=timeout)
    took = time.monotonic() - begun
    assert proc.returncode == 0, f"meshlet lab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    done: dict[str, Any] = json.loads(proc.stdout)
    return Restarted(took, float(done["ready_seconds"]), "meshlet lab " + " ".join(args))


def drain_seconds(lab: Lab, node: str) -> float:
    """The node ztunnel's --drain-timeout: how long an upgraded ztunnel may keep old connections."""
    argv = processes(lab)[f"ztunnel/{node}"]["argv"]
    return float(argv[argv.index("--drain-timeout") + 1]) if "--drain-timeout" in argv else 10.0


@dataclass
class ControlStop:
    exited: bool
    seconds: float
    """How long control took to exit on SIGTERM (or how long we waited before SIGKILL)."""


def stop_control(lab: Lab, patience: float = 5.0) -> ControlStop:
    """SIGTERM control and wait up to `patience` seconds; a control that is still there is killed (the outage
    is what the test is after; the exit time is a figure of its own)."""
    started = processes(lab)["control"]
    begun = time.monotonic()
    os.kill(started["pid"], signal.SIGTERM)
    deadline = begun + patience
    while running(started) and time.monotonic() < deadline:
        time.sleep(0.02)
    took = time.monotonic() - begun
    if running(started):
        os.kill(started["pid"], signal.SIGKILL)
        wait_for(lambda: not running(started), 10, "control to die")
        return ControlStop(False, took)
    return ControlStop(True, took)


@dataclass
class ControlStart:
    begun: float
    ready: float
    """time.monotonic() when control was started, and when its /ready first answered 200."""


def start_control(lab: Lab) -> ControlStart:
    """Start control again as `lab up` does (and record it in lab.json), and wait until it is ready."""
    state = LabState.load(lab.id)
    assert state is not None
    begun = time.monotonic()
    started = mesh.start_control(state)
    with locked():  # every lab's lock (any `lab up` holds it): taken after the start, so it delays no figure
        state = LabState.load(lab.id)
        assert state is not None
        state.processes["control"] = started
        state.save()
    ready = f"{lab.status['control']['metrics']}/ready"

    def answers() -> bool:
        try:
            with _DIRECT.open(ready, timeout=1) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:  # 503 while it starts: close it, or its socket is left to the GC
            exc.close()
            return False

    wait_for(answers, 30, "control to be ready", interval=0.01)
    return ControlStart(begun, time.monotonic())


@dataclass
class Load:
    proc: subprocess.Popen[str]
    stop_file: Path
    ready_file: Path

    def finish(self, timeout: float = 30) -> dict[str, Any]:
        """Stop the load once its download (if any) has ended; the idle connection is asked again then. Returns
        the client's figures."""
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"the load client exited {self.proc.returncode}:\n{err}"
        result: dict[str, Any] = json.loads(out)
        return result

    def requests(self) -> int:
        """Requests made so far (the client updates its ready file every few requests)."""
        return int(self.ready_file.read_text())

    def goes_on(self, more: int = 20, timeout: float = 30) -> None:
        """Wait until the load made `more` requests after now: it ran past what just happened."""
        target = self.requests() + more
        wait_for(lambda: self.requests() >= target, timeout, f"the load to make {more} more requests")


@contextlib.contextmanager
def load(
    lab: Lab, client: str, server: str, workdir: Path, interval: float = 0.03, download: tuple[int, int] | None = None
) -> Iterator[Load]:
    """The bounded load from pod `client` to pod `server`'s app, running once the block starts (its first
    requests answered), with a download of (bytes, bytes a second) if asked; killed if the block ends
    without `finish`."""
    stop_file, ready_file = workdir / "load.stop", workdir / "load.ready"
    stop_file.unlink(missing_ok=True)
    ready_file.unlink(missing_ok=True)
    argv = [MESHLET, "lab", "--id", lab.id, "exec", client, "--", sys.executable, "-m",
            "tests.reliability.load_client", lab.pod(server)["ip"], "8080", "--stop-file", str(stop_file),
            "--ready-file", str(ready_file), "--interval", str(interval), "--max-seconds", str(LOAD_LIMIT)]  # fmt: skip
    if download is not None:
        argv += ["--download-bytes", str(download[0]), "--download-rate", str(download[1])]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ready_file.exists() or proc.poll() is not None, 20, "the load to start")
        assert proc.poll() is None, f"the load client exited at once:\n{proc.communicate()[1]}"
        yield Load(proc, stop_file, ready_file)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
