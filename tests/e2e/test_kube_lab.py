"""e2e: a lab whose source of truth is a Kubernetes API server (`meshlet lab up --source kubernetes`, issue #16).

Pods, Services and policies live in the lab's API server (the repository's test API server, as a process on the
lab's host address); control and every agent list and watch it, and each ztunnel gets its workload certificates
by presenting its pod's ServiceAccount token (control checks it with a TokenReview). The demo must pass as it
does with the file source, on both redirection backends. Then the API server misbehaves as real ones do
(restart, 410 Gone after compaction, dropped watches, a 30 s outage) under a steady stream of requests between
mesh pods: none may fail, and a change made after each fault must reach every ztunnel (no event lost), with
control holding exactly what the API server holds (none duplicated).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.status import read_status
from meshlet.lab.kube_mesh import FAULTS_PORT
from meshlet.lab.kube_objects import LabApi
from tests.conftest import wait_for
from tests.e2e.conftest import BACKENDS, Lab, lab_of, meshlet
from tests.e2e.mesh_helpers import config_dump, curl, url
from tests.e2e.test_lab_apps import MANIFEST

CONTROL_KINDS = [
    ("v1", "Namespace"), ("v1", "Node"), ("v1", "Pod"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("security.meshlet.io/v1", "AuthorizationPolicy"), ("security.meshlet.io/v1", "PeerAuthentication"),
]  # fmt: skip
"""What control keeps of the lab's cluster (kinds the lab fills); compared object for object after the faults."""


APPS = MANIFEST.replace("REPLICAS", "2")
"""test_lab_apps's Deployment of two replicas behind an HTTP Service, in an ambient namespace."""


class KubeLabs:
    """One Kubernetes-sourced lab per backend, brought up when a test first asks for it, all taken down at the
    end of the module: tests choose their backend freely (the faults are spread over both) without a new lab."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.labs: dict[str, Lab] = {}

    def __getitem__(self, backend: str) -> Lab:
        if backend not in self.labs:
            lab = self.stack.enter_context(lab_of("--source", "kubernetes", "--redirect", backend))
            lab.status["backend"] = backend
            self.labs[backend] = lab
        return self.labs[backend]


@pytest.fixture(scope="module")
def kube_labs() -> Iterator[KubeLabs]:
    with contextlib.ExitStack() as stack:
        yield KubeLabs(stack)


@pytest.fixture
def kube_lab(kube_labs: KubeLabs, backend: str) -> Lab:
    return kube_labs[backend]


each_backend = pytest.mark.parametrize("backend", BACKENDS)


def api_of(lab: Lab) -> LabApi:
    return LabApi(Path(lab.status["directory"]) / "kubeconfig")


@each_backend
def test_demo_passes_with_the_api_server_as_source(kube_lab: Lab) -> None:
    assert kube_lab.status["source"] == "kubernetes" and kube_lab.status["apiServer"]
    report = json.loads(kube_lab.run("demo", "--source", "kubernetes", "-o", "json").stdout)
    calls = report["calls"]
    assert len(calls) == 12 and all(c["ok"] and c["status"] == 200 for c in calls), calls
    mesh_to_mesh = [c for c in calls if c["from"].startswith("mesh/") and c["to"].startswith("mesh/")]
    assert len(mesh_to_mesh) == 2 and all(c["security"].startswith("mTLS") for c in mesh_to_mesh)
    # The workload certificates came from control, for a node that proved itself with a token.
    by_node = {z["node"]: z for z in report["ztunnels"]}
    assert by_node["node1"]["principals"] == ["spiffe://cluster.local/ns/mesh/sa/web"]
    # The agent wrote its redirection annotation on each captured pod through the API.
    pods = {p["metadata"]["name"]: p for p in api_of(kube_lab).list_all("v1", "Pod")}
    annotations = pods["web-1a"]["metadata"].get("annotations") or {}
    assert annotations.get("meshlet.io/redirection") == "enabled", pods["web-1a"]["metadata"]


@each_backend
def test_meshlet_label_on_the_labs_cluster_captures_and_releases(kube_lab: Lab) -> None:
    """`meshlet label --lab` on a lab whose cluster is an API server patches the Namespace there, as kubectl would;
    the agents see it through their watch."""
    label = "meshlet.io/dataplane-mode"
    proc = meshlet("label", "--lab", kube_lab.id, "namespace", "plain", f"{label}=ambient")
    assert "labelled on the cluster" in proc.stdout
    try:
        wait_for(lambda: _pod_state(kube_lab, "web-1b") == "captured", 15, "web-1b captured after the label")
        labels = api_of(kube_lab).get("v1", "Namespace", None, "plain")["metadata"]["labels"]  # type: ignore[index]
        assert labels[label] == "ambient"
    finally:
        meshlet("label", "--lab", kube_lab.id, "namespace", "plain", f"{label}-")
    wait_for(lambda: _pod_state(kube_lab, "web-1b") == "plain", 15, "web-1b released after the unlabel")


@each_backend
def test_lab_apply_and_delete_go_through_the_api_server(kube_lab: Lab, tmp_path: Path) -> None:
    """`lab apply -f` on a Kubernetes lab writes its objects to the API server (the lab starts the Deployment's
    pods and reports them Running as a kubelet would); requests to the Service reach both replicas through the
    mesh; `lab delete -f` removes them from the API server again."""
    path = tmp_path / "apps.yaml"
    path.write_text(APPS)
    meshlet("lab", "--id", kube_lab.id, "apply", "-f", str(path))
    try:
        api = api_of(kube_lab)
        pods = [p for p in api.list_all("v1", "Pod") if p["metadata"]["namespace"] == "shop"]
        assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods), pods
        vip = api.get("v1", "Service", "shop", "echo")["spec"]["clusterIP"]  # type: ignore[index]
        names = {p["metadata"]["name"] for p in pods}

        def answered_by_both() -> bool:
            seen = set()
            for _ in range(6):
                proc = curl(kube_lab, "web-1a", f"http://{vip}/hello")
                if proc.returncode == 0:
                    seen.add(json.loads(proc.stdout)["pod"])
            return seen == names

        wait_for(answered_by_both, 20, "both replicas answering through the Service")
    finally:
        meshlet("lab", "--id", kube_lab.id, "delete", "-f", str(path))
    assert [p for p in api_of(kube_lab).list_all("v1", "Pod") if p["metadata"]["namespace"] == "shop"] == []


ISTIO_POLICY = """\
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: istio-deny-9, namespace: mesh}
spec:
  action: DENY
  rules: [{to: [{operation: {ports: ["9"]}}]}]
"""


@each_backend
def test_istios_own_v1beta1_policy_yaml_applies_on_the_labs_cluster(kube_lab: Lab, tmp_path: Path) -> None:
    """Istio's docs write `security.istio.io/v1beta1`: the API server keeps it (its CRD serves v1 and v1beta1),
    control reads it through v1, and every ztunnel enforces it."""
    path = tmp_path / "istio.yaml"
    path.write_text(ISTIO_POLICY)
    meshlet("lab", "--id", kube_lab.id, "apply", "-f", str(path))
    try:
        wait_for(lambda: _held_everywhere(kube_lab, "istio-deny-9"), 20, "every ztunnel holding Istio's policy")
    finally:
        meshlet("lab", "--id", kube_lab.id, "delete", "-f", str(path))
    wait_for(lambda: not _held_everywhere(kube_lab, "istio-deny-9"), 20, "every ztunnel dropping Istio's policy")


def _pod_state(lab: Lab, name: str) -> str | None:
    """The pod's state as its node's agent reports it (captured, pending, plain, error)."""
    for node in lab.status["nodes"]:
        for pod in read_status(Path(node["agentSocket"]), timeout=2)["pods"]:
            if pod["name"] == name:
                state: str | None = pod["state"]
                return state
    return None


class Requests:
    """Requests from one mesh pod to another on the other node, one every 100 ms, counted by outcome."""

    def __init__(self, lab: Lab, source: str, target: str, count: int) -> None:
        script = (
            f"for i in $(seq {count}); do curl -s -o /dev/null -m 3 -w '%{{http_code}}\\n' {target}; sleep 0.1; done"
        )
        self.proc = subprocess.Popen(
            [*_exec(lab, source), "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def result(self, timeout: float) -> list[str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.split()


def _exec(lab: Lab, pod: str) -> list[str]:
    from tests.e2e.conftest import MESHLET

    return [MESHLET, "lab", "--id", lab.id, "exec", pod, "--"]


def _fault(lab: Lab, name: str, **query: Any) -> None:
    host = lab.status["apiServer"].removeprefix("http://").rsplit(":", 1)[0]
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    request = urllib.request.Request(f"http://{host}:{FAULTS_PORT}/{name}?{qs}", method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=150) as resp:
        assert resp.status == 200


def _policy(name: str) -> dict[str, Any]:
    """A DENY nobody's traffic meets (port 9): harmless, and visible in every ztunnel's config."""
    return {
        "apiVersion": "security.meshlet.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "mesh"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["9"]}}]}]},
    }


def _held_everywhere(lab: Lab, name: str) -> bool:
    for node in (n["name"] for n in lab.status["nodes"]):
        held = config_dump(lab, node)["policies"]
        if not any((p["namespace"], p["name"]) == ("mesh", name) for kind in held.values() for p in kind):
            return False
    return True


def _control_objects(lab: Lab) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{lab.status['control']['metrics']}/debug/status", timeout=5) as resp:
        count: int = json.loads(resp.read())["objects"]
        return count


@pytest.mark.parametrize(
    "backend, fault, query, seconds",
    # Each fault once, spread over both backends' labs: the watch side is the backend's business only in
    # "traffic unaffected", which every case checks on the lab it runs on.
    [
        ("iptables", "restart", {}, 3),
        ("ebpf", "compact", {}, 3),
        ("ebpf", "drop-watches", {"abrupt": 1}, 3),
        ("iptables", "outage", {"seconds": 30}, 36),
    ],
)
def test_api_server_faults_leave_traffic_alone_and_lose_no_change(
    kube_lab: Lab, fault: str, query: dict[str, Any], seconds: float
) -> None:
    api = api_of(kube_lab)
    requests = Requests(kube_lab, "web-1a", url(kube_lab, "web-2a"), count=int(seconds * 10))
    injector = threading.Thread(target=_fault, args=(kube_lab, fault), kwargs=query)
    started = time.monotonic()
    injector.start()
    injector.join(timeout=150)
    assert not injector.is_alive(), f"the {fault} fault did not end"
    # A change after the fault: the watches must have come back (relisting after a 410) and deliver it.
    name = f"after-{fault}"
    api.apply(_policy(name))
    try:
        wait_for(lambda: _held_everywhere(kube_lab, name), 30, f"every ztunnel holding {name} after the {fault}")
    finally:
        api.delete(_policy(name))
    wait_for(lambda: not _held_everywhere(kube_lab, name), 30, f"every ztunnel dropping {name}")
    codes = requests.result(timeout=max(5.0, seconds * 3 - (time.monotonic() - started)))
    assert codes and all(code == "200" for code in codes), (
        f"requests during the {fault}: {codes}; node1's ztunnel log ends:\n{_log_tail(kube_lab, 'ztunnel-node1')}"
        f"\nnode2's:\n{_log_tail(kube_lab, 'ztunnel-node2')}"
    )
    # Control holds exactly what the API server holds: nothing lost, nothing twice.
    expected = sum(len(api.list_all(version, kind)) for version, kind in CONTROL_KINDS)
    wait_for(lambda: _control_objects(kube_lab) == expected, 15, f"control holding the API server's {expected}")


def _log_tail(lab: Lab, name: str, lines: int = 60) -> str:
    """The end of a lab process's log, for a failure's message (the lab and its logs go at teardown)."""
    path = Path(lab.status["directory"]) / "logs" / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
