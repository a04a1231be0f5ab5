"""`meshlet certs` reads each identity's chain from ztunnel: every certificate, the root last, with its serial,
validity window and state against now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from control.ca import CertificateAuthority
from meshlet.cli import inspect
from tests.integration.ztunnel.loopback import workload_certificate
from ztunnel.identity.chain import describe, state

ID = "spiffe://cluster.local/ns/mesh/sa/web"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("ca"), "cluster.local")


def test_the_chain_ends_with_the_root_and_says_each_ones_serial_window_and_state(ca: CertificateAuthority) -> None:
    cert = workload_certificate(ca, ID)
    chain = describe(cert)
    assert [c["role"] for c in chain] == ["leaf", "root"]
    leaf, root = chain
    assert leaf["subject"] == ID and leaf["state"] == "valid"
    parsed = x509.load_pem_x509_certificate(cert.chain_pem[0].encode())
    assert leaf["serial"] == f"{parsed.serial_number:x}"
    assert leaf["notAfter"] == parsed.not_valid_after_utc.isoformat()
    assert root["subject"] == "CN=meshlet root CA,O=cluster.local" and root["state"] == "valid"
    later = datetime.now(UTC) + timedelta(hours=2)  # the test CA issues for an hour
    assert describe(cert, later)[0]["state"] == "expired" and describe(cert, later)[1]["state"] == "valid"


def test_states_follow_the_life_of_a_certificate() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)
    assert state(start, end, start - timedelta(seconds=1)) == "not yet valid"
    assert state(start, end, start + timedelta(days=2)) == "valid"  # half life: ztunnel renews here
    assert state(start, end, start + timedelta(days=3, hours=1)) == "expiring"  # renewal keeps failing
    assert state(start, end, end) == "expired"


def test_certs_shows_a_row_per_certificate_and_one_for_an_identity_still_waiting(ca: CertificateAuthority) -> None:
    cert = workload_certificate(ca, ID)
    dump = {"certificates": [
        {"identity": ID, "notAfter": cert.not_after.isoformat(), "error": None, "chain": describe(cert)},
        {"identity": "spiffe://cluster.local/ns/shop/sa/db", "notAfter": None, "error": "CSR refused"},
    ]}  # fmt: skip
    rows = inspect.certs(dump, None)
    assert [(r["identity"].rsplit("/", 1)[1], r["role"]) for r in rows] == [("web", "leaf"), ("web", "root"),
                                                                            ("db", "leaf")]  # fmt: skip
    assert rows[2]["error"] == "CSR refused" and rows[2]["state"] is None
    assert [r["role"] for r in inspect.certs(dump, "mesh")] == ["leaf", "root"]
    assert [h for h, _ in inspect.COLUMNS["certs"]] == ["IDENTITY", "CERT", "SERIAL", "NOT BEFORE", "NOT AFTER",
                                                        "STATE", "ERROR"]  # fmt: skip
