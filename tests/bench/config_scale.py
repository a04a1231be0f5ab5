"""Config at scale (issue #18): how long a store change takes to reach a node's ztunnel, at 1,000 and 10,000
workloads, and what control and ztunnel hold in memory then.

Real processes on loopback: control (`serve --store DIR`, the file source) and one ztunnel for node1 with the
stand-in agent of the lifecycle tests (no pods of its own: the config path only). Pods are written as one file
each, as `lab apply` and kubectl-like tools write them, spread over 20 nodes and 100 namespaces with one Service
per namespace, so the config carries endpoints as a cluster's would. A push is timed from the first file
written to ztunnel's log saying it applied a version with every workload (its own timestamp, so polling adds
nothing); a one-pod change from the write to the next version. RSS is read from /proc after each push.

    python -m tests.bench.config_scale [--sizes 1000,10000] [-o json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import wait_for
from tests.integration.control.conftest import ControlProcess, namespace
from tests.integration.ztunnel.process import ScriptedAgent, ZtunnelProcess

NODES = 20
NAMESPACES = 100
DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
VERSION_LINE = re.compile(r"^(\S+ \S+) INFO ztunnel: config version (\d+): (\d+) workloads", re.M)


def pod(i: int, node_prefix: str = "node") -> dict[str, Any]:
    ns = f"ns-{i % NAMESPACES}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{i}", "namespace": ns, "labels": {"app": "web", "version": "v1"}},
        "spec": {
            "nodeName": f"{node_prefix}{i % NODES + 1}",
            "serviceAccountName": "web",
            "containers": [{"name": "app", "ports": [{"containerPort": 8080, "name": "http"}]}],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def service(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "web"}, "clusterIP": f"10.96.{i // 256}.{i % 256 + 1}",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }  # fmt: skip


def write(store: Path, name: str, obj: dict[str, Any]) -> None:
    tmp = store / f".{name}.tmp"
    tmp.write_text(yaml.dump(obj, Dumper=DUMPER))
    os.replace(tmp, store / name)


def versions(zt: ZtunnelProcess) -> list[tuple[float, int, int]]:
    """(time, version, workloads) of every config version the ztunnel's log says it applied."""
    return logged_versions(zt.log())


def logged_versions(log: str) -> list[tuple[float, int, int]]:
    """(time, version, workloads) of every `config version` line in a ztunnel log."""
    out = []
    for stamp, version, count in VERSION_LINE.findall(log):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append((at, int(version), int(count)))
    return out


def _holding(zt: ZtunnelProcess, count: int) -> Callable[[], bool]:
    return lambda: any(c >= count for _, _, c in versions(zt))


def _past(zt: ZtunnelProcess, version: int) -> Callable[[], bool]:
    return lambda: max(v for _, v, _ in versions(zt)) > version


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(sizes: list[int], root: Path) -> list[dict[str, Any]]:
    control = ControlProcess(root)
    control.store.mkdir()
    control.write("namespaces.yaml", *(namespace(f"ns-{n}", ambient=True) for n in range(NAMESPACES)))
    for n in range(NAMESPACES):
        write(control.store, f"service.ns-{n}.yaml", service(f"ns-{n}", n))
    control.provision("node1")
    control.start()
    agent = ScriptedAgent(root / "zds.sock")
    zt = ZtunnelProcess(root, "node1", control.url, control.node_dir("node1"), agent.path,
                        extra_args=("--config-cache", ""))  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        zt.start()
        wait_for(zt.ready, 30, "ztunnel ready")
        written = 0
        for size in sizes:
            staging = root / f"staging-{size}"
            staging.mkdir()
            for i in range(written, size):  # dumped beforehand: the push is timed from the files' arrival
                (staging / f"pod.{i}.yaml").write_text(yaml.dump(pod(i), Dumper=DUMPER))
            started = time.time()
            for i in range(written, size):
                os.replace(staging / f"pod.{i}.yaml", control.store / f"pod.{i}.yaml")
            wrote = time.time() - started
            written = size
            wait_for(_holding(zt, size), 600, f"ztunnel holding {size} workloads")
            applied = min(at for at, _, c in versions(zt) if c >= size)
            pushed_in = sum(1 for at, _, _ in versions(zt) if started <= at <= applied)
            # One pod changes (a label): from the write to the next version at ztunnel.
            last = max(v for _, v, _ in versions(zt))
            changed = pod(0)
            changed["metadata"]["labels"]["version"] = f"v{size}"
            t0 = time.time()
            write(control.store, "pod.0.yaml", changed)
            wait_for(_past(zt, last), 120, "the one-pod change at ztunnel")
            one = min(at for at, v, _ in versions(zt) if v > last) - t0
            assert control.proc is not None and zt.proc is not None
            rows.append({
                "workloads": size, "pushSeconds": round(applied - started, 3), "writeSeconds": round(wrote, 3),
                "versions": pushed_in,
                "onePodSeconds": round(one, 3), "controlRssMiB": round(rss_mib(control.proc.pid), 1),
                "ztunnelRssMiB": round(rss_mib(zt.proc.pid), 1),
            })  # fmt: skip
    finally:
        if zt.proc is not None:
            zt.stop()
        agent.close()
        if control.proc is not None:
            control.kill()
    return rows


def measure(sizes: list[int]) -> list[dict[str, Any]]:
    """The rows for `sizes` (ascending), in a temporary directory of their own."""
    with tempfile.TemporaryDirectory(prefix="meshlet-config-scale-") as tmp:
        return run(sizes, Path(tmp))


def table(rows: list[dict[str, Any]]) -> str:
    head = ("workloads", "push s", "(moving files s)", "versions", "one pod s", "control MiB", "ztunnel MiB")
    keys = ("workloads", "pushSeconds", "writeSeconds", "versions", "onePodSeconds", "controlRssMiB", "ztunnelRssMiB")
    widths = [max(len(h), 8) for h in head]
    lines = ["  ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(f"{r[k]:>{w}}" for k, w in zip(keys, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.config_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000", help="workload counts, ascending (pods are added up to each)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    rows = measure(sorted(int(s) for s in args.sizes.split(",")))
    print(json.dumps(rows) if args.output == "json" else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
