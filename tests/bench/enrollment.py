"""Enrollment (issue #18): how long from a namespace label written to the store until the node's agent has the
pod captured (and back to plain after the label goes), and how long 100 pods take when their namespace is
labelled at once, for each redirection backend.

A fresh lab per backend (`meshlet lab up --redirect B`). The label is written into the lab's store the way
`meshlet label` writes it (one object, one atomic file); the time it lands is taken just before the rename,
and the agent's own status says since when each pod is in its state (`since`), so polling the status adds
nothing to what is measured. The 100 pods are a Deployment in a namespace of their own (`lab apply`), all
running before the label is written.

    python -m tests.bench.enrollment [--flips 10] [--bulk 100] [--backends iptables,ebpf] [-o json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from agent.status import read_status
from meshlet.lab.store import object_filename, write_objects
from tests.bench.lab import MESHLET
from tests.conftest import wait_for

LABEL = "meshlet.io/dataplane-mode"
BULK_NAMESPACE = "bulk"


def _lab(lab_id: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([MESHLET, "lab", "--id", lab_id, *args], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"meshlet lab {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    if "-o" in args:
        result: dict[str, Any] = json.loads(proc.stdout)
        return result
    return {}


class Enrollment:
    """One running lab: write labels into its store, read pods' states from its agents."""

    def __init__(self, lab_id: str) -> None:
        self.lab_id = lab_id
        self.status = _lab(lab_id, "status", "-o", "json")
        self.store = Path(self.status["store"])

    def pods(self) -> dict[str, dict[str, Any]]:
        """(namespace/name) -> the pod as its node's agent reports it."""
        out: dict[str, dict[str, Any]] = {}
        for node in self.status["nodes"]:
            for pod in read_status(Path(node["agentSocket"]), timeout=5)["pods"]:
                out[f"{pod['namespace']}/{pod['name']}"] = pod
        return out

    def label(self, namespace: str, value: str | None) -> float:
        """Set (or with None remove) the namespace's label in the store; returns when the file landed."""
        path = self.store / object_filename({"kind": "Namespace", "metadata": {"name": namespace}})
        obj = yaml.safe_load(path.read_text())
        labels = obj["metadata"].setdefault("labels", {}) or {}
        obj["metadata"]["labels"] = labels
        if value is None:
            labels.pop(LABEL, None)
        else:
            labels[LABEL] = value
        landed = time.time()  # the write is a rename: the file source can see it from this moment on
        write_objects(self.store, [obj])
        return landed

    def settled(self, keys: list[str], state: str, after: float, timeout: float = 60.0) -> list[float]:
        """Seconds from `after` until each pod of `keys` was in `state`."""
        found: dict[str, float] = {}

        def done() -> bool:
            pods = self.pods()
            for key in keys:
                pod = pods.get(key)
                if pod is not None and pod["state"] == state and pod["since"] >= after:
                    found[key] = pod["since"] - after
            return len(found) == len(keys)

        wait_for(done, timeout, f"{len(keys)} pods {state}")
        return [found[k] for k in keys]


def _bulk_manifest(pods: int) -> str:
    """A namespace (not enrolled) with `pods` pods: Deployments of at most 50 replicas (a lab's limit)."""
    docs = [
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {BULK_NAMESPACE}}}\n",
        f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: bulk, namespace: {BULK_NAMESPACE}}}\n",
    ]
    for n, start in enumerate(range(0, pods, 50)):
        replicas = min(50, pods - start)
        docs.append(f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: bulk-{n}, namespace: {BULK_NAMESPACE}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: bulk-{n}}}}}
  template:
    metadata: {{labels: {{app: bulk-{n}}}}}
    spec: {{serviceAccountName: bulk, containers: [{{name: app, image: echo, ports: [{{containerPort: 8080}}]}}]}}
""")
    return "---\n".join(docs)


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def measure_backend(backend: str, flips: int, bulk: int, workdir: Path) -> dict[str, Any]:
    lab_id = f"ben{backend[:2]}"
    _lab(lab_id, "up", "--redirect", backend)
    try:
        lab = Enrollment(lab_id)
        plain = sorted(k for k in lab.pods() if k.startswith("plain/"))
        captured: list[float] = []
        released: list[float] = []
        for _ in range(flips):
            captured += lab.settled(plain, "captured", lab.label("plain", "ambient"))
            released += lab.settled(plain, "plain", lab.label("plain", None))
        row: dict[str, Any] = {
            "backend": backend,
            "flips": flips,
            "capturedP50Ms": _ms(captured, 0.5), "capturedP99Ms": _ms(captured, 0.99),
            "releasedP50Ms": _ms(released, 0.5), "releasedP99Ms": _ms(released, 0.99),
        }  # fmt: skip
        if bulk:
            manifest = workdir / f"bulk-{backend}.yaml"
            manifest.write_text(_bulk_manifest(bulk))
            _lab(lab_id, "apply", "-f", str(manifest))

            def bulk_pods() -> list[str]:
                return sorted(k for k in lab.pods() if k.startswith(f"{BULK_NAMESPACE}/"))

            wait_for(lambda: len(bulk_pods()) == bulk, 60, f"the agents reporting the {bulk} new pods")
            keys = bulk_pods()
            times = lab.settled(keys, "captured", lab.label(BULK_NAMESPACE, "ambient"), timeout=120)
            row.update(bulk=bulk, bulkAllCapturedS=round(max(times), 3), bulkMedianS=round(statistics.median(times), 3))
        return row
    finally:
        _lab(lab_id, "down")


def measure(backends: list[str], flips: int, bulk: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="meshlet-enrollment-") as tmp:
        return [measure_backend(b, flips, bulk, Path(tmp)) for b in backends]


def table(rows: list[dict[str, Any]]) -> str:
    head = ("backend", "label->captured p50/p99 ms", "unlabel->plain p50/p99 ms", "pods at once", "all captured s")
    lines = ["  ".join(head)]
    for r in rows:
        lines.append("  ".join([
            f"{r['backend']:<7}", f"{r['capturedP50Ms']:>12} / {r['capturedP99Ms']:<11}",
            f"{r['releasedP50Ms']:>11} / {r['releasedP99Ms']:<11}", f"{r.get('bulk', '-'):>12}",
            f"{r.get('bulkAllCapturedS', '-'):>14}",
        ]))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.enrollment", description=__doc__.split("\n\n")[0])
    p.add_argument("--flips", type=int, default=10, help="label/unlabel rounds per backend (2 pods each)")
    p.add_argument("--bulk", type=int, default=100, help="pods labelled at once (0: skip)")
    p.add_argument("--backends", default="iptables,ebpf")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    rows = measure(args.backends.split(","), args.flips, args.bulk)
    print(json.dumps(rows) if args.output == "json" else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
