"""Where one request's time goes at c=1 (issue #18): syscalls, wakeups and CPU per request on each proxy hop,
meshlet's ztunnels (C, iptables) against the HAProxy mTLS pair (B) and the Python floor (P: the least a Python
mTLS relay pair does, tls_relay.py, in B's places), measured the same way in one lab.

For each pair, `wrk -c1` runs for a fixed time from the client pod while `strace -c -f` counts the syscalls of
both proxies; a second, untraced run gives req/s, p50 and, from /proc, the proxies' CPU time and context
switches (voluntary: a wakeup after a wait), since strace stops the process at every syscall. Every count is
divided by the requests wrk completed in its run. Prints a table per hop and writes JSON with `-o json`.

    python -m tests.bench.c1_trace [--seconds 5] [-o json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench import haproxy, nginx, tls_relay
from tests.bench.lab import Lab, stop
from tests.bench.workloads import parse_wrk, wrk_argv

_CLK_TCK = os.sysconf("SC_CLK_TCK")
STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def _proc(pid: int) -> tuple[float, float, int, int]:
    """(user and system CPU seconds, voluntary and involuntary context switches) of a process and its threads."""
    user = system = 0
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return user / _CLK_TCK, system / _CLK_TCK, vol, invol


def syscalls(text: str) -> dict[str, int]:
    """strace -c's table as {syscall: calls}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = STRACE_ROW.match(line)
        if m and m.group(2) != "total":
            out[m.group(2)] = int(m.group(1))
    return out


def trace(lab: Lab, client: str, url: str, proxies: dict[str, int], seconds: float) -> dict[str, Any]:
    """wrk -c1 under strace of `proxies` (node -> pid); per request: syscalls by name, CPU, wakeups."""
    tracers = {
        node: subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(pid)], stderr=subprocess.PIPE, text=True)
        for node, pid in proxies.items()
    }
    try:
        traced = parse_wrk(lab.exec(client, wrk_argv(url, 1, seconds), timeout=seconds + 30).stdout)
    finally:
        for t in tracers.values():
            t.send_signal(2)  # SIGINT: strace detaches and prints its table
    counts = {node: syscalls(t.communicate(timeout=30)[1]) for node, t in tracers.items()}
    # CPU and context switches from an untraced run: strace stops the process at every syscall.
    before = {node: _proc(pid) for node, pid in proxies.items()}
    free = parse_wrk(lab.exec(client, wrk_argv(url, 1, seconds), timeout=seconds + 30).stdout)
    after = {node: _proc(pid) for node, pid in proxies.items()}
    hops: dict[str, Any] = {}
    for node in proxies:
        n, m = max(traced.requests, 1), max(free.requests, 1)
        user, system, vol, invol = (a - b for a, b in zip(after[node], before[node], strict=True))
        hops[node] = {
            "syscallsPerRequest": {k: round(v / n, 2) for k, v in sorted(counts[node].items(), key=lambda kv: -kv[1])
                                   if v / n >= 0.05},
            "cpuUsPerRequest": round(1e6 * (user + system) / m, 1),
            "userUsPerRequest": round(1e6 * user / m, 1),
            "systemUsPerRequest": round(1e6 * system / m, 1),
            "wakeupsPerRequest": round(vol / m, 2),
            "preemptionsPerRequest": round(invol / m, 2),
        }  # fmt: skip
    return {"requestsTraced": traced.requests, "rps": round(free.rps), "p50Ms": free.p50_ms, "hops": hops}


def run(seconds: float) -> dict[str, Any]:
    lab = Lab("c1trace")
    workdir = Path(tempfile.mkdtemp(prefix="meshlet-c1-"))
    workdir.chmod(0o755)
    started: list[subprocess.Popen[str]] = []
    try:
        nginx.write_site(workdir)
        lab.up("iptables")
        pods = lab.pods()
        for pod in ("web-2b", "web-2a"):
            started.append(nginx.start(lab, pod, workdir))
        pair = haproxy.start_pair(lab, "web-1b", "web-2b", pods["web-2b"].ip, nginx.PORT, workdir)
        started += [pair.client, pair.server]
        url_b = f"http://127.0.0.1:{haproxy.CLIENT_PORT}/1k"
        b = trace(lab, "web-1b", url_b, {"client side": pair.client.pid, "server side": pair.server.pid}, seconds)
        for proc in (pair.client, pair.server):
            stop(proc)
            started.remove(proc)
        client, server = tls_relay.start_pair(lab, "web-1b", "web-2b", pods["web-2b"].ip, nginx.PORT, workdir)
        started += [client, server]
        url_p = f"http://127.0.0.1:{tls_relay.CLIENT_PORT}/1k"
        p = trace(lab, "web-1b", url_p, {"client side": client.pid, "server side": server.pid}, seconds)
        for proc in (client, server):
            stop(proc)
            started.remove(proc)
        ztunnels = lab.node_proxies()
        url_c = f"http://{pods['web-2a'].ip}:{nginx.PORT}/1k"
        c = trace(lab, "web-1a", url_c, {"node1 (source)": ztunnels["node1"], "node2 (destination)": ztunnels["node2"]},
                  seconds)  # fmt: skip
        return {"B haproxy": b, "P python floor": p, "C meshlet iptables": c}
    finally:
        while started:
            stop(started.pop())
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


def table(doc: dict[str, Any]) -> str:
    lines = []
    for name, result in doc.items():
        lines.append(f"{name}: {result['rps']:,} req/s untraced, p50 {result['p50Ms']} ms")
        for hop, h in result["hops"].items():
            calls = ", ".join(f"{k} {v:g}" for k, v in h["syscallsPerRequest"].items())
            wakeups, cpu = h["wakeupsPerRequest"], h["cpuUsPerRequest"]
            split = f"user {h['userUsPerRequest']:g} + system {h['systemUsPerRequest']:g}"
            lines.append(
                f"  {hop}: {cpu:g} us CPU ({split}), {wakeups:g} wakeups per request; syscalls/request: {calls}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.c1_trace", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    doc = run(args.seconds)
    print(json.dumps(doc) if args.output == "json" else table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
