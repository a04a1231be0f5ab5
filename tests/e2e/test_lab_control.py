"""Control inside the lab: it reads the lab's store, and each node reaches it with its own credential."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab
from ztunnel.identity.manager import new_csr


@pytest.fixture
def lab(shared_lab: Lab) -> Lab:
    """The shared lab; the test that takes it down gets its own."""
    return shared_lab


def csr_from_node(lab: Lab, node: str, spiffe: str, tmp: Path) -> tuple[int, dict[str, object]]:
    cred = Path(lab.status["directory"]) / "nodes" / node / "credential"
    body = tmp / "csr.json"
    body.write_text(json.dumps({"csr": new_csr(spiffe)[1].decode()}))
    proc = lab.exec(
        node, "curl", "-sS", "-m", "5", "--cacert", str(cred / "root-cert.pem"), "--cert", str(cred / "node-cert.pem"),
        "--key", str(cred / "node-key.pem"), "--data-binary", f"@{body}", "-w", "\n%{http_code}",
        f"{lab.status['control']['url']}/v1/certificates",
    )  # fmt: skip
    text, _, code = proc.stdout.rpartition("\n")
    return int(code), json.loads(text)


def test_control_serves_the_lab_store(lab: Lab) -> None:
    assert lab.status["control"]["running"]
    out = lab.exec("node1", "curl", "-sS", "-m", "5", f"{lab.status['control']['metrics']}/debug/status").stdout
    status = json.loads(out)
    assert status["synced"] and status["errors"] == [] and status["version"] >= 1


def test_node_gets_certificates_for_its_own_pods_only(lab: Lab, tmp_path: Path) -> None:
    code, body = csr_from_node(lab, "node1", "spiffe://cluster.local/ns/mesh/sa/web", tmp_path)
    assert code == 200, body
    # web-2a's identity is the same service account, but a pod in namespace plain on node2 only:
    code, body = csr_from_node(lab, "node2", "spiffe://cluster.local/ns/ghost/sa/web", tmp_path)
    assert (code, body["reason"]) == (403, "no_pod_on_node")


def test_pods_reach_control_and_its_replies_stay_in_the_lab(lab: Lab) -> None:
    # As pods reach the API server in a cluster. The host routes pod CIDRs to their nodes, so the reply
    # comes back through the lab rather than leaving by the host's default route.
    proc = lab.exec("web-1a", "curl", "-sS", "-m", "5", f"{lab.status['control']['metrics']}/ready")
    assert proc.stdout == "ready\n"


@pytest.mark.breaks_lab
def test_lab_down_stops_control(lab: Lab) -> None:
    lab.run("down")
    assert subprocess.run(["pgrep", "-f", f"control serve --store /var/run/meshlet/labs/{lab.id}/"]).returncode == 1
