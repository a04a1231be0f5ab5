"""The mesh's own processes in the lab: control in the host netns, with a credential for every node.

The lab plays cluster admin here: it provisions each node's credential (as a node joining a cluster
would get one) with `python -m control provision-node`, then starts `python -m control serve` on the
host's node-network address, reading the lab's store. Components are started as processes, never
imported: the lab is their user, like a DaemonSet or a Deployment would be.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from agent.lab import kernel, processes
from agent.lab.plan import CONTROL_METRICS_PORT, CONTROL_PORT, TRUST_DOMAIN, LabPlan
from agent.lab.state import LabState

READY_TIMEOUT = 20.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Talks to lab addresses directly, whatever http_proxy the environment sets."""


class MeshStartError(RuntimeError):
    """A mesh component did not come up; the message points at its log."""


def control_state(state: LabState) -> Path:
    return Path(state.directory) / "control"


def node_credential_dir(state: LabState, node: str) -> Path:
    return Path(state.directory) / "nodes" / node / "credential"


def provision_nodes(state: LabState) -> None:
    for node in state.plan.nodes:
        argv = processes.python_module(
            "control", "provision-node", node.name, "--state", str(control_state(state)),
            "--out", str(node_credential_dir(state, node.name)), "--trust-domain", TRUST_DOMAIN,
        )  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise MeshStartError(f"provisioning node {node.name} failed: {proc.stderr.strip()}")


def start_control(state: LabState) -> processes.Started:
    plan = state.plan
    kernel.cgroup_create(plan.control_cgroup)
    argv = processes.python_module(
        "control", "serve", "--store", str(state.store), "--state", str(control_state(state)),
        "--listen", f"{plan.host_ip}:{CONTROL_PORT}", "--metrics", f"{plan.host_ip}:{CONTROL_METRICS_PORT}",
        "--trust-domain", TRUST_DOMAIN,
    )  # fmt: skip
    return processes.spawn(argv, None, plan.control_cgroup, state.logs / "control.log")


def wait_control_ready(plan: LabPlan, started: processes.Started) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not processes.is_running(started):
            raise MeshStartError(f"control exited during start; see {started.log}")
        try:
            with _DIRECT.open(f"{plan.control_metrics}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise MeshStartError(f"control not ready after {READY_TIMEOUT:.0f}s; see {started.log}")
