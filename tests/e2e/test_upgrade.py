"""The zero-downtime ztunnel upgrade, as `meshlet lab restart NODE ztunnel --overlap` does it, under load.

A fresh lab per backend. From web-1a to web-2a (node1 to node2, across the mesh): short requests, each on a
new connection, every 30 ms; one idle keep-alive connection asked again at the end; one rate-limited download
that outlasts the old ztunnel's SIGTERM drain limit. Meanwhile node2's ztunnel (the destination's) is
upgraded, then node1's (the source's). What must hold: no new request failed, the download and the idle
connection survived both upgrades, each node's ZDS owner changed exactly once (no flapping), the new
ztunnel owns the node when the command returns, and each old one exits on its own once its connections ended.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.status import read_status
from meshlet.lab.processes import Started, is_running
from tests.conftest import wait_for
from tests.e2e.conftest import BACKENDS, MESHLET, Lab, lab_of, meshlet
from tests.e2e.mesh_helpers import end, url

REPO = Path(__file__).resolve().parents[2]
DOWNLOAD_BYTES = 4_000_000
DOWNLOAD_RATE = "250K"
"""~16 s: longer than the lab's --drain-timeout (10 s), so only a drain that waits for it keeps it."""


class Load:
    """`upgrade_client.py` running in a pod: short requests on new connections, one idle keep-alive one."""

    def __init__(self, proc: subprocess.Popen[str], stop: Path, count: Path) -> None:
        self.proc, self.stop, self.count = proc, stop, count

    def made(self) -> int:
        return int(self.count.read_text()) if self.count.exists() else 0

    def goes_on(self, more: int) -> None:
        """Wait until `more` requests were made after now: the load ran past what just happened."""
        target = self.made() + more
        wait_for(lambda: self.made() >= target or self.proc.poll() is not None, 30, f"{more} more requests")

    def finish(self) -> dict[str, object]:
        self.stop.touch()
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, f"the load client exited {self.proc.returncode}:\n{err}"
        figures: dict[str, object] = json.loads(out)
        return figures


@contextlib.contextmanager
def load(lab: Lab, client: str, server: str, workdir: Path, interval: float = 0.03) -> Iterator[Load]:
    stop, count = workdir / "load.stop", workdir / "load.count"
    argv = [MESHLET, "lab", "--id", lab.id, "exec", client, "--", sys.executable, "-m", "tests.e2e.upgrade_client",
            lab.pod(server)["ip"], "8080", "--stop-file", str(stop), "--count-file", str(count),
            "--interval", str(interval)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        running = Load(proc, stop, count)
        running.goes_on(10)
        yield running
    finally:
        end(proc)


def agent_ztunnel(lab: Lab, node: str) -> dict[str, object]:
    socket_path = next(n["agentSocket"] for n in lab.status["nodes"] if n["name"] == node)
    ztunnel: dict[str, object] = read_status(Path(socket_path))["ztunnel"]
    return ztunnel


def recorded(lab: Lab) -> dict[str, Started]:
    state = json.loads((Path(lab.status["directory"]) / "lab.json").read_text())
    return {k: Started(p["pid"], p["starttime"], tuple(p["argv"]), p["log"]) for k, p in state["processes"].items()}


def upgrade(lab: Lab, node: str) -> dict[str, object]:
    """Run the command; check what it reports and what the agent says against each other."""
    before = agent_ztunnel(lab, node)
    out = meshlet("lab", "--id", lab.id, "restart", node, "ztunnel", "--overlap", "-o", "json", timeout=60)
    done: dict[str, object] = json.loads(out.stdout)
    after = agent_ztunnel(lab, node)
    assert done["old_pid"] == before["pid"] and done["new_pid"] == after["pid"] != before["pid"]
    assert after["connected"] and after["connects"] == before["connects"] + 1  # one takeover, no flapping
    old = recorded(lab)[f"previous/ztunnel/{node}/{done['old_pid']}"]  # tracked until it exits
    done["old"] = old
    return done


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrading_both_ztunnels_under_load_fails_no_request_and_keeps_long_connections(
    backend: str, tmp_path: Path
) -> None:
    with lab_of("--redirect", backend) as lab:
        with load(lab, "web-1a", "web-2a", tmp_path) as running:
            into = tmp_path / "download"
            target = url(lab, "web-2a", f"/bytes?n={DOWNLOAD_BYTES}")
            download = subprocess.Popen(
                [MESHLET, "lab", "--id", lab.id, "exec", "web-1a", "--", "curl", "-sS", "-m", "40", "--limit-rate",
                 DOWNLOAD_RATE, "-o", str(into), "-w", "%{size_download}", target],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                wait_for(lambda: into.exists() and into.stat().st_size > 0, 15, "the download to start")
                destination = upgrade(lab, "node2")
                running.goes_on(30)
                source = upgrade(lab, "node1")
                running.goes_on(30)
                out, err = download.communicate(timeout=60)
                assert download.returncode == 0 and int(out) == DOWNLOAD_BYTES, f"the download was cut: {err}"
            finally:
                end(download)
            figures = running.finish()
        print(
            json.dumps(
                {
                    "backend": backend,
                    "load": figures,
                    "upgrades": [{k: v for k, v in d.items() if k != "old"} for d in (destination, source)],
                }
            )
        )  # for the report (-s)
        assert figures["failed"] == 0, f"new requests failed during the upgrades: {figures}"
        assert figures["idle_reused"], f"the idle keep-alive connection was cut: {figures['idle_error']}"
        for done in (destination, source):
            old = done["old"]
            assert isinstance(old, Started)
            # Nothing holds it any more: it exits on its own, well before its upgrade drain limit (60 s).
            wait_for(lambda old=old: not is_running(old), 20, f"the old ztunnel (pid {old.pid}) to exit")
        for node, done in (("node2", destination), ("node1", source)):
            assert agent_ztunnel(lab, node)["pid"] == done["new_pid"]
