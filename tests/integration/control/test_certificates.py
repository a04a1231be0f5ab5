"""The CSR endpoint, driven with curl and the node credentials the lab would provision."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.control.conftest import TD, ControlProcess
from ztunnel.identity.manager import new_csr


def request_cert(control: ControlProcess, spiffe: str, node: str | None, tmp: Path) -> tuple[int, dict[str, Any]]:
    _, csr = new_csr(spiffe)
    body = tmp / "req.json"
    body.write_text(json.dumps({"csr": csr.decode()}))
    cred = (
        ["--cert", str(control.node_dir(node) / "node-cert.pem"), "--key", str(control.node_dir(node) / "node-key.pem")]
        if node
        else []
    )
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "-m",
            "10",
            "--cacert",
            str(control.node_dir("node1") / "root-cert.pem"),
            *cred,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{body}",
            "-w",
            "\n%{http_code}",
            f"{control.url}/v1/certificates",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    text, _, code = proc.stdout.rpartition("\n")
    return int(code), json.loads(text)


def test_identity_of_a_pod_on_the_asking_node_is_signed_with_the_right_san(
    control: ControlProcess, tmp_path: Path
) -> None:
    spiffe = f"spiffe://{TD}/ns/mesh/sa/web"
    code, body = request_cert(control, spiffe, "node1", tmp_path)
    assert code == 200, body
    leaf = x509.load_pem_x509_certificate(body["certificateChain"][0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
    root = x509.load_pem_x509_certificate(body["rootCertificate"].encode())
    leaf.verify_directly_issued_by(root)
    assert root.public_bytes(Encoding.PEM).decode() == (control.state / "ca" / "root-cert.pem").read_text()
    assert control.metric("meshlet_control_certificates_issued_total") == 1


def test_pod_on_another_node_is_refused(control: ControlProcess, tmp_path: Path) -> None:
    code, body = request_cert(control, f"spiffe://{TD}/ns/mesh/sa/api", "node1", tmp_path)
    assert code == 403
    assert body["reason"] == "no_pod_on_node"
    assert "mesh/api is scheduled on node node1" in body["error"]
    assert control.metric("meshlet_control_certificates_refused_total", 'reason="no_pod_on_node"') == 1
    assert "refused a certificate for node node1" in control.log()


def test_identity_with_no_pod_is_refused(control: ControlProcess, tmp_path: Path) -> None:
    code, body = request_cert(control, f"spiffe://{TD}/ns/ghost/sa/nobody", "node2", tmp_path)
    assert (code, body["reason"]) == (403, "no_pod_on_node")


def test_other_trust_domain_is_refused(control: ControlProcess, tmp_path: Path) -> None:
    code, body = request_cert(control, "spiffe://evil.test/ns/mesh/sa/web", "node1", tmp_path)
    assert code in (400, 403) and body["reason"] in ("bad_csr", "wrong_trust_domain")


def test_request_without_node_credential_is_refused(control: ControlProcess, tmp_path: Path) -> None:
    code, body = request_cert(control, f"spiffe://{TD}/ns/mesh/sa/web", None, tmp_path)
    assert code == 401
    assert body["reason"] == "no_node_credential" and "node credential" in body["error"]
    assert control.metric("meshlet_control_certificates_refused_total", 'reason="no_node_credential"') == 1


def test_reprovisioned_node_cannot_use_its_old_credential(control: ControlProcess, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for f in ("node-cert.pem", "node-key.pem"):
        (old / f).write_bytes((control.node_dir("node1") / f).read_bytes())
    control.provision("node1")
    for f in ("node-cert.pem", "node-key.pem"):
        (control.node_dir("node1") / f).write_bytes((old / f).read_bytes())
    code, body = request_cert(control, f"spiffe://{TD}/ns/mesh/sa/web", "node1", tmp_path)
    assert (code, body["reason"]) == (401, "stale_node_credential")
