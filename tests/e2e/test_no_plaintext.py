"""No plaintext between enrolled pods on the wire, in any state of the node proxy or of control.

An enrolled pod on node1 keeps POSTing a marker to an enrolled pod on node2 while node1's ztunnel is
killed and restarted with control up, while control is down (ztunnel restarted from its cached config),
and while ztunnel starts with control down and no cached config at all. tcpdump on node1's underlay
link sees everything that leaves the node; the marker must never be in it. A plain pod's POST of another
marker across the same link shows the capture does see plaintext when there is some.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import MESHLET, Lab, lab_of
from tests.e2e.mesh_helpers import capture, end, processes, running, stop

# Runs inside the pod (its netns and cgroup): POSTs the marker in a loop for a bounded time and count,
# one connection each, and prints what happened as JSON.
SENDER = r"""
import json, socket, sys, time
ip, port, marker, seconds, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
body = marker.encode()
head = f"POST /echo HTTP/1.1\r\nHost: {ip}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
request = head.encode() + body
out = {"ok": 0, "failed": 0, "echoed": 0}
end = time.monotonic() + seconds
while time.monotonic() < end and out["ok"] + out["failed"] < limit:
    try:
        with socket.create_connection((ip, port), timeout=2) as s:
            s.settimeout(4)
            s.sendall(request)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        out["ok" if got.startswith(b"HTTP/1.1 200") else "failed"] += 1
        out["echoed"] += body in got
    except OSError:
        out["failed"] += 1
        time.sleep(0.02)
print(json.dumps(out))
"""


@pytest.fixture(params=["iptables", "ebpf"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with lab_of("--redirect", request.param) as running_lab:
        yield running_lab


def sender(lab: Lab, pod: str, target: str, marker: str, seconds: float, limit: int = 2000) -> subprocess.Popen[str]:
    ip = lab.pod(target)["ip"]
    argv = [MESHLET, "lab", "--id", lab.id, "exec", pod, "--", sys.executable, "-c", SENDER, ip, "8080", marker]
    return subprocess.Popen(
        [*argv, str(seconds), str(limit)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    counts: dict[str, int] = json.loads(out)
    return counts


def send(lab: Lab, pod: str, target: str, marker: str, seconds: float, limit: int = 2000) -> dict[str, int]:
    return result(sender(lab, pod, target, marker, seconds, limit))


def start_ztunnel(lab: Lab, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """node1's ztunnel again, with the arguments the lab gave it, in node1's netns and cgroup."""
    with open(log, "ab") as out:
        return subprocess.Popen([MESHLET, "lab", "--id", lab.id, "exec", "node1", "--", *argv], stdout=out, stderr=out)


def serving(log: Path, count: int = 1) -> bool:
    return log.read_text(errors="replace").count("serving mesh/web-1a") >= count


def test_no_marker_crosses_the_node_link_through_restarts_and_a_control_outage(lab: Lab, tmp_path: Path) -> None:
    marker = "MARKER-" + secrets.token_hex(8)
    plain_marker = "PLAIN-" + secrets.token_hex(8)
    started: dict[str, Any] = processes(lab)["ztunnel/node1"]
    argv: list[str] = started["argv"][3:]
    cache = Path(argv[argv.index("--config-cache") + 1])
    log = tmp_path / "ztunnel-node1.log"
    ours: list[subprocess.Popen[bytes]] = []
    traffic: list[dict[str, int]] = []
    with capture(lab, 1, tmp_path / "node1.pcap") as pcap:
        try:
            # The capture sees plaintext when there is some (plain pods), and the mesh works.
            assert send(lab, "web-1b", "web-2b", plain_marker, 5, limit=3)["echoed"] == 3
            assert send(lab, "web-1a", "web-2a", marker, 5, limit=3)["echoed"] == 3
            wait_for(cache.is_file, 10, "ztunnel to keep its config on disk")

            # 1. Restart with control up, under load: killed, then started again while the sender runs.
            load = sender(lab, "web-1a", "web-2a", marker, 6)
            stop(lab, "ztunnel/node1")
            ours.append(start_ztunnel(lab, argv, log))
            wait_for(lambda: serving(log), 20, "the new ztunnel to serve web-1a")
            traffic.append(result(load))
            wait_for(lambda: send(lab, "web-1a", "web-2a", marker, 5, limit=1)["echoed"] == 1, 20,
                     "the restarted ztunnel to carry mesh traffic")  # fmt: skip

            # 2. Control outage; ztunnel restarted from its cached config while control is away.
            stop(lab, "control")
            traffic.append(send(lab, "web-1a", "web-2a", marker, 2, limit=20))
            load = sender(lab, "web-1a", "web-2a", marker, 5)
            ours[-1].kill()
            ours[-1].wait(timeout=10)
            ours.append(start_ztunnel(lab, argv, log))
            wait_for(lambda: serving(log, 2), 20, "ztunnel to serve web-1a from its cached config")
            traffic.append(result(load))
            text = log.read_text(errors="replace")
            assert "serving the cached config" in text, text[-2000:]

            # 3. ztunnel starts with control down and no config at all.
            ours[-1].kill()
            ours[-1].wait(timeout=10)
            cache.unlink()
            ours.append(start_ztunnel(lab, argv, log))
            wait_for(lambda: serving(log, 3), 20, "ztunnel to take web-1a's listeners without config")
            traffic.append(send(lab, "web-1a", "web-2a", marker, 5, limit=20))
            assert traffic[-1]["ok"] == 0, traffic  # nothing is forwarded without config
        finally:
            for proc in ours:
                end(proc)
    assert not running(started)
    data = pcap.read_bytes()
    assert plain_marker.encode() in data, "the capture did not see the plain pods' plaintext"
    leaked = marker.encode() in data
    assert not leaked, f"the marker crossed node1's link in plaintext; traffic: {traffic}"
    assert sum(t["ok"] + t["failed"] for t in traffic) > 0, traffic
