"""e2e fixtures: labs (unique ids), always torn down, and checks that nothing is left.

A lab takes ~10 s to bring up, so the e2e tests that only read one (or change the store and revert it,
waiting until the proxies have applied the revert) share it: `shared_lab` (backend auto), and
`shared_backend_lab` once per redirection backend, each up from its first test to the end of tests/e2e
(pytest groups the tests of one backend together). After each such test the lab must be as the test found
it (same processes, same store), or the test fails and so does every later one on that lab. A test that
breaks things (kills or restarts a daemon, changes labels) is marked `breaks_lab` and gets a fresh lab of
its own from the same fixture; `lab` is always a fresh one."""

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
import yaml

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
    broken_by: str | None = None
    """The test that left this shared lab changed, if one did."""

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


BACKENDS = ["iptables", "ebpf"]
"""The redirection backends every mesh test must hold for."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "breaks_lab: the test kills, restarts or relabels: it gets a lab of its own, not the shared one"
    )


@pytest.fixture(scope="package")
def _shared_auto_lab() -> Iterator[Lab]:
    with lab_of() as running:
        yield running


@pytest.fixture(scope="package", params=BACKENDS)
def _shared_backend_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with lab_of("--redirect", request.param) as running:
        running.status["backend"] = request.param
        yield running


@pytest.fixture
def shared_lab(_shared_auto_lab: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The whole mesh (backend auto), one lab shared by the tests that leave it as they found it; a test
    marked `breaks_lab` gets a fresh one of its own."""
    yield from _shared_or_own(_shared_auto_lab, request)


@pytest.fixture
def shared_backend_lab(_shared_backend_lab: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """As `shared_lab`, once per redirection backend (its name in `status["backend"]`)."""
    backend = _shared_backend_lab.status["backend"]
    yield from _shared_or_own(_shared_backend_lab, request, "--redirect", backend)


def _shared_or_own(shared: Lab, request: pytest.FixtureRequest, *extra: str) -> Iterator[Lab]:
    if request.node.get_closest_marker("breaks_lab") is None:
        with left_as_found(shared, request.node.nodeid):
            yield shared
        return
    with lab_of(*extra) as own:
        if "backend" in shared.status:
            own.status["backend"] = shared.status["backend"]
        yield own


def _fingerprint(lab: Lab) -> dict[str, Any]:
    """What a test sharing the lab must not change: its processes (PID and start time) and the store.
    Annotations are left out: the agent writes them, and they follow the labels, which are compared."""
    state = json.loads((Path(lab.status["directory"]) / "lab.json").read_text())
    store: dict[str, Any] = {}
    for path in sorted(Path(lab.status["store"]).glob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            obj["metadata"].pop("annotations", None)
        store[path.name] = obj
    processes = {key: (p["pid"], p["starttime"]) for key, p in state["processes"].items()}
    return {"processes": processes, "store": store}


@contextlib.contextmanager
def left_as_found(lab: Lab, test: str) -> Iterator[None]:
    """Fail the test, and every later one sharing `lab`, when it leaves the lab changed: a shared lab that
    a test broke would make the next tests fail for reasons that are not theirs."""
    if lab.broken_by:
        pytest.fail(f"the shared lab {lab.id} was left changed by {lab.broken_by}")
    before = _fingerprint(lab)
    yield
    after = _fingerprint(lab)
    gone = [key for key, (pid, start) in after["processes"].items() if proc_starttime(pid) != start]
    changed = [name for name in before["store"].keys() | after["store"].keys()
               if before["store"].get(name) != after["store"].get(name)]  # fmt: skip
    if before["processes"] != after["processes"] or gone or changed:
        lab.broken_by = test
        pytest.fail(f"{test} left the shared lab {lab.id} changed: processes not running {gone}, "
                    f"store objects changed {changed}; revert in the test, or mark it breaks_lab")  # fmt: skip
