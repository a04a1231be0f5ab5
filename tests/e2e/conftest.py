"""e2e fixtures: a fresh lab per test (unique id), always torn down, and checks that nothing is left."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshlet.lab import kernel
from meshlet.lab.plan import prefix_for
from meshlet.lab.processes import proc_starttime

MESHLET = str(Path(sys.executable).parent / "meshlet")

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="e2e tests build network namespaces: run as root"))


def meshlet(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `meshlet` CLI of this venv."""
    proc = subprocess.run([MESHLET, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"meshlet {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def new_lab_id() -> str:
    return "t" + secrets.token_hex(3)


@dataclass
class Lab:
    """A running lab as the tests see it: its id and `meshlet lab status -o json`."""

    id: str
    status: dict[str, Any]

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return meshlet("lab", "--id", self.id, *args, **kw)

    def exec(self, name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("exec", name, "--", *cmd, check=check)

    def pod(self, name: str) -> dict[str, Any]:
        pod: dict[str, Any] = next(p for p in self.status["pods"] if p["name"] == name)
        return pod


def leftovers(lab_id: str) -> dict[str, list[str]]:
    """Everything of the lab that the kernel or the disk still holds."""
    prefix = prefix_for(lab_id)
    cg = kernel.cgroup_path(f"{prefix}lab")
    own_pids = [
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if f"/{prefix}lab/" in _cgroup(pid) and proc_starttime(pid) is not None  # zombies are not running
    ]
    return {
        "netns": [n for n in kernel.netns_list() if n.startswith(prefix)],
        "links": [link["ifname"] for link in kernel.links() if link["ifname"].startswith(prefix)],
        "cgroups": [str(cg)] if cg.exists() else [],
        "processes": [str(p) for p in own_pids],
        "files": [str(p) for p in [Path("/var/run/meshlet/labs") / lab_id] if p.exists()],
        "bpf": [str(p) for p in Path("/sys/fs/bpf/meshlet").glob(f"{prefix}*")],
    }


def _cgroup(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def bring_up(lab_id: str, nodes: int = 2, pods_per_node: int = 2, *extra: str) -> Lab:
    meshlet("lab", "--id", lab_id, "up", "--nodes", str(nodes), "--pods-per-node", str(pods_per_node), *extra)
    status = json.loads(meshlet("lab", "--id", lab_id, "status", "-o", "json").stdout)
    return Lab(lab_id, status)


@contextlib.contextmanager
def lab_of(*extra: str) -> Iterator[Lab]:
    """A fresh 2-node x 2-pod lab, removed afterwards even when the test fails."""
    lab_id = new_lab_id()
    try:
        yield bring_up(lab_id, 2, 2, *extra)
    finally:
        meshlet("lab", "--id", lab_id, "down", check=False)
        left = leftovers(lab_id)
        assert not any(left.values()), f"lab {lab_id} left {left}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The whole mesh: control, and every node's agent and ztunnel."""
    with lab_of() as running:
        yield running


@pytest.fixture
def bare_lab() -> Iterator[Lab]:
    """Control and pods only: tests start an agent or a ztunnel themselves."""
    with lab_of("--no-node-daemons") as running:
        yield running
