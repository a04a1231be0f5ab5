"""What tests/e2e/test_traffic.py does to its lab: the versioned apps it runs (MANIFEST), load from the client pod
through `tests.e2e.traffic_client`, HTTPRoutes and TrafficPolicies applied with `meshlet lab apply -f` and
waited for until every node's ztunnel holds them (or dropped them), and what the pods' logs and the client node's
metrics say."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import wait_for
from tests.e2e.conftest import MESHLET, Lab
from tests.e2e.mesh_helpers import config_dump, metric

REPO = Path(__file__).resolve().parents[2]
CLIENT = "web-1a"
CLIENT_NODE = "node1"
IN_FORCE_TIMEOUT = 15.0
NS = "shop"


def deployment_manifest(name: str, replicas: int, labels: dict[str, str], env: dict[str, str] | None = None) -> str:
    container: dict[str, Any] = {"name": "app", "image": "echo", "ports": [{"containerPort": 8080}]}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": labels["app"], **(
                     {"version": labels["version"]} if "version" in labels else {})}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"serviceAccountName": "echo", "containers": [container]}}},
    })  # fmt: skip


def service_manifest(name: str, selector: dict[str, str]) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })  # fmt: skip


DEPLOYMENTS = {
    "echo-v1": (2, {"app": "echo", "version": "v1"}, None),
    "echo-v2": (1, {"app": "echo", "version": "v2"}, None),
    "steady": (2, {"app": "steady", "retry": "pool", "outlier": "pool", "lazy": "pool"}, None),
    "resetter": (1, {"app": "resetter", "retry": "pool"}, {"ECHO_RESET_EVERY": "2"}),
    "failer": (1, {"app": "failer", "outlier": "pool"}, {"ECHO_STATUS": "503"}),
    "sleeper": (1, {"app": "sleeper", "lazy": "pool"}, {"ECHO_DELAY": "500ms"}),
    "mirror": (1, {"app": "mirror"}, None),
}
SERVICES = {
    "echo": {"app": "echo"},
    "echo-v1": {"app": "echo", "version": "v1"},
    "echo-v2": {"app": "echo", "version": "v2"},
    "retry": {"retry": "pool"},
    "outlier": {"outlier": "pool"},
    "lazy": {"lazy": "pool"},
    "mirror": {"app": "mirror"},
}
MANIFEST = "---\n".join([
    yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": NS, "labels": {"meshlet.io/dataplane-mode": "ambient"}}}),
    yaml.safe_dump({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "echo", "namespace": NS}}),
    *(deployment_manifest(name, *spec) for name, spec in DEPLOYMENTS.items()),
    *(service_manifest(name, selector) for name, selector in SERVICES.items()),
])  # fmt: skip


# ----- the lab: Services, pods, logs -----


def refresh(lab: Lab) -> None:
    lab.status = {**json.loads(lab.run("status", "-o", "json").stdout), "backend": lab.status["backend"]}


def vip(lab: Lab, service: str) -> str:
    return str(next(s["vip"] for s in lab.status["services"] if (s["namespace"], s["name"]) == (NS, service)))


def pods_of(lab: Lab, deployment: str) -> set[str]:
    return {p["name"] for p in lab.status["pods"] if p["namespace"] == NS and p["name"].startswith(f"{deployment}-")}


def deployment_of(pod: str) -> str:
    """`echo-v1-<hash>-<id>` -> `echo-v1`."""
    return pod.rsplit("-", 2)[0] if pod.count("-") >= 2 else pod


def log_lines(lab: Lab, pod: str, marker: str) -> list[str]:
    """The lines of `pod`'s app log (one per request it answered or reset) that contain `marker`."""
    path = Path(lab.status["directory"]) / "logs" / f"app.{NS}.{pod}.log"
    return [line for line in path.read_text(errors="replace").splitlines() if marker in line and '"' in line]


def source_metric(lab: Lab, name: str, **labels: str) -> float:
    return metric(lab, CLIENT_NODE, name, **labels)


def requests_flagged(lab: Lab, service: str, flag: str) -> float:
    return source_metric(lab, "istio_requests_total", reporter="source", destination_service_name=service,
                         response_flags=flag)  # fmt: skip


def counter(lab: Lab, name: str, service: str) -> float:
    """A meshlet_* counter of the client's node for a Service of `shop`, summed over its other labels."""
    return source_metric(lab, name, destination_service_namespace=NS, destination_service_name=service)


# ----- load from the client pod -----


def load(lab: Lab, service: str, n: int, c: int = 1, path: str = "/", *extra: str) -> list[dict[str, Any]]:
    """n requests over c keep-alive connections from the client pod to the Service; one result per request."""
    argv = [MESHLET, "lab", "--id", lab.id, "exec", CLIENT, "--", sys.executable, "-m", "tests.e2e.traffic_client",
            "load", vip(lab, service), "80", "-n", str(n), "-c", str(c), "--path", path, *extra]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"traffic_client load {service} {path}: {proc.returncode}\n{proc.stderr[-2000:]}"
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])["results"]
    assert len(results) == n
    return results


class Stream:
    """Requests one after another on one connection from the client pod, each answer timestamped as it comes."""

    def __init__(self, lab: Lab, service: str, seconds: float, path: str = "/", gap: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [MESHLET, "lab", "--id", lab.id, "exec", CLIENT, "--", sys.executable, "-m", "tests.e2e.traffic_client",
             "stream", vip(lab, service), "80", "--seconds", str(seconds), "--path", path, "--gap", str(gap)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.answers.put(json.loads(line))

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {len(self.seen)} answers of {count} in {timeout}s")
            try:
                self.seen.append(self.answers.get(timeout=left))
            except queue.Empty:
                continue

    def finish(self, timeout: float = 60) -> list[dict[str, Any]]:
        """Every answer, once the client has run its time (its stdout is the reader thread's until EOF)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.reader.join(10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        assert self.proc.returncode == 0, f"traffic_client stream: {self.proc.returncode}\n{err[-2000:]}"
        while not self.answers.empty():
            self.seen.append(self.answers.get())
        return self.seen

    def stop(self) -> None:
        """End the client if still running (ours, by its Popen) and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


# ----- applying routes and policies -----


def _held_on(lab: Lab, kind: str, name: str) -> list[bool]:
    """Per node: whether its ztunnel holds the route or policy `shop/name` (what its /config_dump lists)."""
    out = []
    for node in (n["name"] for n in lab.status["nodes"]):
        dump = config_dump(lab, node)
        items = dump["routes"] if kind == "HTTPRoute" else dump["policies"]["traffic"]
        out.append(any((i["namespace"], i["name"]) == (NS, name) for i in items))
    return out


def apply(lab: Lab, tmp_path: Path, obj: dict[str, Any]) -> Path:
    """`meshlet lab apply -f` the object, and wait until every node's ztunnel holds it."""
    path = tmp_path / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(obj))
    lab.run("apply", "-f", str(path))
    wait_for(lambda: all(_held_on(lab, obj["kind"], obj["metadata"]["name"])), IN_FORCE_TIMEOUT,
             f"every ztunnel to hold {obj['kind']} {obj['metadata']['name']}")  # fmt: skip
    return path


def remove(lab: Lab, path: Path) -> None:
    """`meshlet lab delete -f` what `apply` applied, and wait until every node's ztunnel dropped it."""
    obj = yaml.safe_load(path.read_text())
    lab.run("delete", "-f", str(path))
    wait_for(lambda: not any(_held_on(lab, obj["kind"], obj["metadata"]["name"])), IN_FORCE_TIMEOUT,
             f"every ztunnel to drop {obj['kind']} {obj['metadata']['name']}")  # fmt: skip


def route(name: str, service: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": service, "port": 80}], "rules": list(rules)},
    }


def backend(service: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": service, "port": 80}
    if weight is not None:
        ref["weight"] = weight
    return ref


def traffic_policy(name: str, service: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.meshlet.io/v1",
        "kind": "TrafficPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"targetRef": {"kind": "Service", "name": service}, **spec},
    }


def canary(v1: int, v2: int) -> dict[str, Any]:
    return route(
        "canary", "echo",
        {"matches": [{"headers": [{"name": "x-canary", "value": "true"}]}], "backendRefs": [backend("echo-v2")]},
        {"backendRefs": [backend("echo-v1", v1), backend("echo-v2", v2)]},
    )  # fmt: skip


def by_deployment(results: list[dict[str, Any]]) -> Counter[str]:
    return Counter(deployment_of(r["pod"]) for r in results if r["status"] == 200)


def statuses(results: list[dict[str, Any]]) -> Counter[int]:
    return Counter(int(r["status"]) for r in results)


def errors(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r["status"] != 200]


def write_yaml(path: Path, obj: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(obj))
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
