"""The lab as the benchmark uses it: through the `meshlet lab` CLI, as a user would.

Only the node proxies' PIDs come from elsewhere, the lab's state file (`lab.json`, `processes`), because
no command prints them; their CPU time and RSS are read from /proc like `ps` would. Their request counts
(`istio_requests_total`, which only the L7 path records) are scraped from each node's ztunnel `/metrics`
with curl in the node's netns, as Prometheus would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from meshlet.lab.scrape import samples

MESHLET = str(Path(sys.executable).with_name("meshlet"))
"""The CLI of the venv running the benchmark."""

ZTUNNEL_METRICS = "http://127.0.0.1:15020/metrics"
"""ztunnel's Prometheus endpoint, from inside its node's netns (ztunnel's default --metrics)."""

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


class LabError(BenchError):
    """`meshlet lab ...` refused or failed; the message is the CLI's own."""


@dataclass(frozen=True, slots=True)
class Pod:
    """A lab pod, from `meshlet lab status -o json`."""

    name: str
    namespace: str
    node: str
    ip: str
    enrolled: bool


class Lab:
    """One lab id, driven with `meshlet lab --id ID ...`."""

    def __init__(self, lab_id: str, ztunnel_args: tuple[str, ...] = ()) -> None:
        self.lab_id = lab_id
        self.ztunnel_args = ztunnel_args
        """Extra ztunnel flags for every `up` (`lab up --ztunnel-arg`), e.g. the upstream pool's idle timeout."""

    def _cli(self, *args: str) -> list[str]:
        return [MESHLET, "lab", "--id", self.lab_id, *args]

    def up(self, redirect: str) -> None:
        """`lab up --nodes 2 --pods-per-node 2 --redirect REDIRECT`; LabError with the CLI's message if refused."""
        extra = [f"--ztunnel-arg={arg}" for arg in self.ztunnel_args]  # `=`: a value may start with '-'
        proc = subprocess.run(
            self._cli("up", "--nodes", "2", "--pods-per-node", "2", "--redirect", redirect, *extra),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            # the CLI wraps long messages to the terminal width: join them back into one line
            raise LabError(" ".join(lines[-6:]) or f"meshlet lab up exited {proc.returncode}")

    def down(self) -> None:
        """`lab down`: removes everything, kills whatever still runs in the lab's cgroups. Safe twice."""
        subprocess.run(self._cli("down"), capture_output=True, text=True, timeout=120)

    def status(self) -> dict[str, Any]:
        proc = subprocess.run(self._cli("status", "-o", "json"), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise LabError(proc.stderr.strip() or "meshlet lab status failed")
        status: dict[str, Any] = json.loads(proc.stdout)
        return status

    def pods(self) -> dict[str, Pod]:
        return {
            p["name"]: Pod(p["name"], p["namespace"], p["node"], p["ip"], bool(p["enrolled"]))
            for p in self.status()["pods"]
        }

    def exec(self, target: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run argv in a pod's (or node's) netns and cgroup and wait for it."""
        try:
            return subprocess.run(
                self._cli("exec", target, "--", *argv), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{' '.join(argv[:3])}... in {target} took longer than {timeout:.0f}s") from exc

    def spawn(
        self,
        target: str,
        argv: list[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = None,
    ) -> subprocess.Popen[str]:
        """Start argv in a pod's netns and cgroup. `lab exec` execs in place, so the PID is the program's."""
        return subprocess.Popen(
            self._cli("exec", target, "--", *argv), stdin=stdin, stdout=stdout, stderr=stderr, text=True
        )

    def apply(self, path: Path) -> subprocess.CompletedProcess[str]:
        """`lab apply -f PATH`: Services, HTTPRoutes, TrafficPolicies, ... into the lab, as a user would."""
        return subprocess.run(self._cli("apply", "-f", str(path)), capture_output=True, text=True, timeout=120)

    def processes(self) -> dict[str, int]:
        """{what it is for (control, agent/node1, ztunnel/node1, app/ns/pod...): PID} from the lab's state file."""
        state = json.loads(Path(f"/var/run/meshlet/labs/{self.lab_id}/lab.json").read_text())
        return {key: int(proc["pid"]) for key, proc in state["processes"].items()}

    def node_proxies(self) -> dict[str, int]:
        """{node name: ztunnel PID} from the lab's state file."""
        pids = {key.split("/", 1)[1]: pid for key, pid in self.processes().items() if key.startswith("ztunnel/")}
        if not pids:
            raise BenchError(f"lab {self.lab_id!r} runs no ztunnel (lab.json lists none)")
        return dict(sorted(pids.items()))

    def metrics(self, node: str) -> str:
        """A node's ztunnel `/metrics` (Prometheus text)."""
        proc = self.exec(node, ["curl", "-sS", "-f", "--max-time", "5", ZTUNNEL_METRICS], timeout=30)
        if proc.returncode != 0:
            raise BenchError(f"{ZTUNNEL_METRICS} on {node}: {proc.stderr.strip()[-200:]}")
        return proc.stdout


def requests_by_reporter(text: str) -> dict[str, float]:
    """{reporter: requests} from Prometheus text: the sum of `istio_requests_total` samples per reporter."""
    out: dict[str, float] = {}
    for name, labels, value in samples(text):
        if name == "istio_requests_total":
            reporter = labels.get("reporter", "")
            out[reporter] = out.get(reporter, 0.0) + value
    return out


def requests_by_destination(text: str) -> dict[str, float]:
    """{destination_service: requests} the source side counted: which Service's endpoints a route sent them to."""
    out: dict[str, float] = {}
    for name, labels, value in samples(text):
        if name == "istio_requests_total" and labels.get("reporter") == "source":
            service = labels.get("destination_service", "")
            out[service] = out.get(service, 0.0) + value
    return out


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM a process we started, by its PID; SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def cpu_us(pid: int) -> float:
    """User + system CPU time of a process so far, in microseconds (/proc/PID/stat utime + stime)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) * 1_000_000 / _CLK_TCK


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"process {pid} has no VmRSS (a zombie?)")


def wait_alive(proc: subprocess.Popen[str], what: str, seconds: float = 0.3) -> None:
    """Fail early with a clear message when a server we started exits right away (bad config, port taken)."""
    time.sleep(seconds)
    if proc.poll() is not None:
        raise BenchError(f"{what} exited at once with code {proc.returncode}")
