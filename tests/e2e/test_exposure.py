"""What any pod can read (ztunnel's metrics and readiness, control's metrics and /debug/status) holds no
secret: no private key, in PEM or in any other encoding, of a workload, a node or the CA. ztunnel's admin
(with /config_dump and /quitquitquit) is not reachable from pods at all."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.e2e.conftest import Lab
from tests.e2e.mesh_helpers import curl, reaches, url


@pytest.fixture
def lab(shared_lab: Lab) -> Lab:
    """The shared lab: this test only reads."""
    return shared_lab


def secrets_of(lab: Lab) -> list[bytes]:
    """Every private key the lab holds, as the byte strings that would betray it if they leaked."""
    directory = Path(lab.status["directory"])
    found: list[bytes] = []
    for pem in [*directory.rglob("*key*.pem")]:
        key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        body = b"".join(line for line in pem.read_bytes().splitlines() if not line.startswith(b"-----"))
        found += [body[:40], base64.b64encode(der)[:40], der.hex()[:40].encode()]
    assert len(found) >= 6, f"expected the CA's and the nodes' keys under {directory}"
    return found


def test_what_pods_can_read_holds_no_secret_and_admin_is_out_of_their_reach(lab: Lab) -> None:
    assert reaches(lab, "web-1a", url(lab, "web-2a"))  # workload certificates issued and in use
    node1 = lab.status["nodes"][0]["ip"]
    control = lab.status["control"]["metrics"].rstrip("/")
    readable = {
        "ztunnel /metrics": f"http://{node1}:15020/metrics",
        "ztunnel readiness": f"http://{node1}:15021/healthz/ready",
        "control /metrics": f"{control}/metrics",
        "control /debug/status": f"{control}/debug/status",
    }
    keys = secrets_of(lab)
    for what, address in readable.items():
        out = curl(lab, "web-1b", address)  # a plain pod
        assert out.returncode == 0 and out.stdout, (what, out)
        text = out.stdout.encode()
        assert b"PRIVATE KEY" not in text, what
        assert not [k for k in keys if k in text], f"{what} shows key material"
    admin = curl(lab, "web-1b", f"http://{node1}:15000/config_dump", "--connect-timeout", "2")
    assert admin.returncode in (7, 28), admin  # refused (nothing listens there) or dropped
