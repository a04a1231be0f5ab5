"""The mesh's own processes in the lab: control in the host netns, with a credential for every node,
and on every node its agent and ztunnel (what the DaemonSet runs on a cluster).

The lab plays cluster admin here: it provisions each node's credential (as a node joining a cluster
would get one) with `python -m control provision-node`, then starts `python -m control serve` on the
host's node-network address, reading the lab's store. Components are started as processes, never
imported: the lab is their user, like a DaemonSet or a Deployment would be.
"""

from __future__ import annotations

import http.client
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from agent.status import read_status
from meshlet.lab import kernel, processes
from meshlet.lab.plan import CONTROL_METRICS_PORT, CONTROL_PORT, TRUST_DOMAIN, LabPlan, NodePlan, prefix_for
from meshlet.lab.state import LabState
from meshlet_contracts.bpf_maps import PIN_ROOT

READY_TIMEOUT = 20.0
ZTUNNEL_READY_PORT = 15021
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Talks to lab addresses directly, whatever http_proxy the environment sets."""


class MeshStartError(RuntimeError):
    """A mesh component did not come up; the message carries the end of its log (a failed `up` removes
    the lab directory, logs included)."""


def _tail(log: str | Path, lines: int = 12) -> str:
    try:
        text = Path(log).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n  | " + "\n  | ".join(text) if text else ""


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


def source_args(state: LabState) -> list[str]:
    """How control and the agents read the lab's objects: its store directory, or its API server."""
    if state.plan.source == "kubernetes":
        return ["--source", "kubernetes", "--kubeconfig", str(Path(state.directory) / "kubeconfig")]
    return ["--store", str(state.store)]


def start_control(state: LabState) -> processes.Started:
    plan = state.plan
    kernel.cgroup_create(plan.control_cgroup)
    argv = processes.python_module(
        "control", "serve", *source_args(state), "--state", str(control_state(state)),
        "--listen", f"{plan.host_ip}:{CONTROL_PORT}", "--metrics", f"{plan.host_ip}:{CONTROL_METRICS_PORT}",
        "--trust-domain", TRUST_DOMAIN, *compat_args(plan),
    )  # fmt: skip
    return processes.spawn(argv, None, plan.control_cgroup, state.logs / "control.log")


def compat_args(plan: LabPlan) -> list[str]:
    """Control and every agent get the same Istio-compatibility setting: one without it would disagree about which
    pods are enrolled (control sends them as such, the agent would not capture them)."""
    return ["--istio-compat"] if plan.istio_compat else []


def wait_control_ready(plan: LabPlan, started: processes.Started) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not processes.is_running(started):
            raise MeshStartError(f"control exited during start:{_tail(started.log)}")
        try:
            with _DIRECT.open(f"{plan.control_metrics}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise MeshStartError(f"control not ready after {READY_TIMEOUT:.0f}s:{_tail(started.log)}")


def node_run_dir(state: LabState, node: str) -> Path:
    """Where a node's sockets live (its `/var/run/meshlet`): one directory per node, so nodes never share."""
    return Path(state.directory) / "nodes" / node / "run"


def node_bpf_dir(state: LabState, node: NodePlan) -> Path:
    """The node's pins in bpffs (bpffs is one per machine: the lab prefix keeps nodes and labs apart)."""
    return PIN_ROOT / f"{prefix_for(state.plan.lab_id)}{node.name}"


def node_identity_args(state: LabState, node: str) -> list[str]:
    """How a node's ztunnel proves itself to control: a ServiceAccount token on Kubernetes (the pod's projected
    token, with the root from control's ConfigMap), else the node credential `provision_nodes` wrote."""
    credentials = node_credential_dir(state, node)
    if state.plan.source == "kubernetes":
        return ["--token", str(credentials / "token"), "--root-cert", str(credentials / "root-cert.pem")]
    return ["--credentials", str(credentials)]


def start_node(state: LabState, node: NodePlan) -> dict[str, processes.Started]:
    """The node's DaemonSet pod: its agent and its ztunnel, both in the node's netns and cgroup."""
    run = node_run_dir(state, node.name)
    pods_cgroup = kernel.cgroup_path(node.cgroup).parent / "pods"
    pods_cgroup.mkdir(parents=True, exist_ok=True)
    bpf_dir = node_bpf_dir(state, node)
    run.mkdir(parents=True, exist_ok=True)
    kernel.cgroup_create(node.cgroup)
    agent = processes.python_module(
        "agent", "--node", node.name, *source_args(state), "--zds-socket", str(run / "ztunnel.sock"),
        "--status-socket", str(run / "agent.sock"), "--redirect", state.plan.redirect, "--probe-ip", node.gateway,
        "--bpf-dir", str(bpf_dir), "--pods-cgroup", str(pods_cgroup), *compat_args(state.plan),
    )  # fmt: skip
    ztunnel = processes.python_module(
        "ztunnel", "--node", node.name, "--control", state.plan.control_url,
        *node_identity_args(state, node.name), "--zds-socket", str(run / "ztunnel.sock"),
        "--trust-domain", TRUST_DOMAIN, "--drain-timeout", "10", "--bpf-dir", str(bpf_dir),
        "--config-cache", str(run.parent / "state" / "config.json"), *state.plan.ztunnel_args,
    )  # fmt: skip
    logs = state.logs
    return {
        f"agent/{node.name}": processes.spawn(agent, node.netns, node.cgroup, logs / f"agent-{node.name}.log"),
        f"ztunnel/{node.name}": processes.spawn(ztunnel, node.netns, node.cgroup, logs / f"ztunnel-{node.name}.log"),
    }


def _settled(agent_socket: Path) -> bool:
    """The agent answers and every enrolled pod of the node is captured (none pending or in error)."""
    pods = read_status(agent_socket, timeout=1)["pods"]
    return all(p["state"] == "captured" for p in pods if p["enrolled"])


def wait_node_ready(state: LabState, node: NodePlan) -> None:
    """ztunnel's readiness (config and the agent's snapshot arrived), and the agent reporting every
    enrolled pod captured: `up` returns a steady mesh."""
    deadline = time.monotonic() + READY_TIMEOUT
    agent_socket = node_run_dir(state, node.name) / "agent.sock"
    while time.monotonic() < deadline:
        for key in (f"agent/{node.name}", f"ztunnel/{node.name}"):
            if not processes.is_running(state.processes[key]):
                raise MeshStartError(f"{key} exited during start:{_tail(state.processes[key].log)}")
        try:
            with _DIRECT.open(f"http://{node.ip}:{ZTUNNEL_READY_PORT}/healthz/ready", timeout=1) as resp:
                if resp.status == 200 and _settled(agent_socket):
                    return
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.05)
    log = state.processes[f"ztunnel/{node.name}"].log
    raise MeshStartError(f"node {node.name} not ready after {READY_TIMEOUT:.0f}s; ztunnel's log ends:{_tail(log)}")
