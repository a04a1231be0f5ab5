"""What the mesh e2e tests do to a running lab: curl from pods, read ztunnel metrics, edit the store,
capture a node's link, and find the lab's own processes by the PIDs it recorded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from meshlet.lab import scrape
from meshlet.lab.plan import prefix_for
from meshlet.lab.processes import proc_starttime
from tests.conftest import wait_for
from tests.e2e.conftest import MESHLET, Lab


def curl(lab: Lab, pod: str, url: str, *args: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
    return lab.exec(pod, "curl", "-sS", "-m", str(timeout), *args, url, check=False)


def get_json(lab: Lab, pod: str, url: str, *args: str) -> dict[str, Any]:
    proc = curl(lab, pod, url, *args)
    assert proc.returncode == 0, f"curl {url} from {pod} failed ({proc.returncode}): {proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def slow_download(lab: Lab, pod: str, target: str, rate: str = "500K") -> subprocess.Popen[str]:
    """curl in `pod` downloading `target` at `rate`, so that the connection outlives what a test does
    meanwhile; its stdout is the byte count received. The caller waits for it or kills it."""
    return subprocess.Popen(
        [MESHLET, "lab", "--id", lab.id, "exec", pod, "--", "curl", "-sS", "-m", "30", "--limit-rate", rate,
         "-o", "/dev/null", "-w", "%{size_download}", target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def end(*procs: subprocess.Popen[Any] | None) -> None:
    """Kill what is still running among `procs` (ours, by PID) and close their pipes."""
    for proc in procs:
        if proc is None:
            continue
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes (no ResourceWarning later)


def hold_connection(lab: Lab, pod: str, ip: str, port: int, seconds: float) -> subprocess.Popen[str]:
    """A TCP connection from `pod` to ip:port that stays open, idle, for `seconds` (a tunnel ztunnel holds)."""
    script = f"import socket,time; s=socket.create_connection(({ip!r},{port})); time.sleep({seconds})"
    return subprocess.Popen([MESHLET, "lab", "--id", lab.id, "exec", pod, "--", "python3", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def reaches(lab: Lab, pod: str, url: str) -> bool:
    return curl(lab, pod, url, timeout=5).returncode == 0


def refused(lab: Lab, pod: str, url: str) -> bool:
    """The connection was refused or reset: a decision, not a slow answer (a timeout is neither)."""
    return curl(lab, pod, url, timeout=5).returncode in (7, 56)


def samples(lab: Lab, node: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric `name` on `node`'s ztunnel."""
    text = lab.exec(node, "curl", "-sS", "-m", "2", "http://127.0.0.1:15020/metrics").stdout
    return [(labels, value) for sample_name, labels, value in scrape.samples(text) if sample_name == name]


def metric(lab: Lab, node: str, name: str, **want: str) -> float:
    """Sum of `name` over the samples whose labels include `want`."""
    return sum(v for labels, v in samples(lab, node, name) if all(labels.get(k) == w for k, w in want.items()))


def url(lab: Lab, pod: str, path: str = "/") -> str:
    return f"http://{lab.pod(pod)['ip']}:8080{path}"


def write_object(lab: Lab, obj: dict[str, Any]) -> Path:
    meta = obj["metadata"]
    path = Path(lab.status["store"]) / f"{obj['kind'].lower()}.{meta.get('namespace', '_')}.{meta['name']}.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(obj))
    os.replace(tmp, path)  # the file source must never read half a file
    return path


def config_dump(lab: Lab, node: str) -> dict[str, Any]:
    """What `node`'s ztunnel holds, from its admin port (which answers on the node only)."""
    dump: dict[str, Any] = json.loads(
        lab.exec(node, "curl", "-sS", "-m", "2", "http://127.0.0.1:15000/config_dump").stdout
    )
    return dump


def remove_policy(lab: Lab, path: Path) -> None:
    """Delete a policy a test wrote to the store (if still there), and wait until every node's ztunnel has
    dropped it: a test sharing its lab leaves the proxies as it found them, not only the store."""
    _, namespace, name = path.name.removesuffix(".yaml").split(".", 2)  # as write_object names it
    path.unlink(missing_ok=True)

    def dropped() -> bool:
        for node in (n["name"] for n in lab.status["nodes"]):
            held = config_dump(lab, node)["policies"]
            if any((p["namespace"], p["name"]) == (namespace, name) for kind in held.values() for p in kind):
                return False
        return True

    wait_for(dropped, 10, f"every ztunnel to drop policy {namespace}/{name}")


def edit_object(lab: Lab, filename: str, change: Any) -> None:
    path = Path(lab.status["store"]) / filename
    obj = yaml.safe_load(path.read_text())
    change(obj)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(obj))
    os.replace(tmp, path)


def processes(lab: Lab) -> dict[str, dict[str, Any]]:
    state = json.loads((Path(lab.status["directory"]) / "lab.json").read_text())
    result: dict[str, dict[str, Any]] = state["processes"]
    return result


def running(started: dict[str, Any]) -> bool:
    return proc_starttime(started["pid"]) == started["starttime"]


def stop(lab: Lab, key: str, sig: int = signal.SIGKILL) -> None:
    """Signal a lab process we started (by its recorded PID, after checking it is still that process)."""
    started = processes(lab)[key]
    assert running(started), f"{key} is not running"
    os.kill(started["pid"], sig)
    wait_for(lambda: not running(started), 10, f"{key} to exit")


@contextlib.contextmanager
def capture(lab: Lab, node_index: int, pcap: Path) -> Iterator[Path]:
    """tcpdump on the host end of node `node_index`'s underlay link, for the duration of the block."""
    link = f"{prefix_for(lab.id)}n{node_index}"
    err = pcap.with_suffix(".err")
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            ["tcpdump", "-i", link, "--immediate-mode", "-U", "-n", "-s", "0", "-w", str(pcap)], stderr=stderr
        )
    try:
        wait_for(lambda: b"listening on" in err.read_bytes(), 10, "tcpdump to listen")
        yield pcap
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def packets(pcap: Path) -> list[str]:
    """tcpdump's one-line summaries of a capture."""
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "tcp"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


REFUSED = (7, 56)
"""curl's exit codes for a connection refused (7) or reset once open (56); 28 is a timeout."""


def ztunnel_log(lab: Lab, node: str) -> Path:
    return Path(lab.status["directory"]) / "logs" / f"ztunnel-{node}.log"


def logged_after(log: Path, offset: int, *words: str) -> str:
    """The first line written to `log` after `offset` that holds every one of `words` ("" when none does)."""
    with log.open("rb") as f:
        f.seek(offset)
        new = f.read().decode(errors="replace")
    return next((line for line in new.splitlines() if all(w in line for w in words)), "")
