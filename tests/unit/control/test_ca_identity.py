"""The CA signs an identity only in its one canonical form: what the issue found signed was
`spiffe://cluster.local/ns/mesh/sa/web\\n`, a certificate that a DENY on `cluster.local/ns/mesh/sa/web` let by.

`sign_csr` (workload CSRs from control's endpoint) and `issue_key_and_cert` (node and control credentials) both
end in the same check; the CSR cases go through a real CSR, the others (which no CSR library writes) through
`issue_key_and_cert`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from control.ca import DEFAULT_TTL, CAError, CertificateAuthority
from control.nodes import NodeRegistry
from ztunnel.identity.manager import new_csr

TD = "cluster.local"
WEB = f"spiffe://{TD}/ns/mesh/sa/web"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "state", TD)


# Each is refused whether asked for in a CSR or handed to the CA directly. Only ASCII fits a CSR's URI.
ASCII_HOSTILE = [
    ("trailing newline", WEB + "\n"),
    ("trailing CRLF", WEB + "\r\n"),
    ("newline inside", f"spiffe://{TD}/ns/mesh/sa/we\nb"),
    ("trailing NUL", WEB + "\x00"),
    ("NUL inside", f"spiffe://{TD}/ns/me\x00sh/sa/web"),
    ("trailing space", WEB + " "),
    ("upper case", f"spiffe://{TD}/ns/mesh/sa/Web"),
    ("trailing slash", WEB + "/"),
    ("extra segment", WEB + "/x"),
    ("dot-dot", f"spiffe://{TD}/ns/mesh/sa/.."),
    ("percent-encoded newline", WEB + "%0a"),
    ("no workload path", f"spiffe://{TD}/anything/else"),
    ("same-prefix trust domain", "spiffe://cluster.localx/ns/mesh/sa/web"),
    ("longer trust domain", "spiffe://cluster.local.evil/ns/mesh/sa/web"),
    ("node name with newline", f"spiffe://{TD}/meshlet/node/node1\n"),
    ("node name with a path", f"spiffe://{TD}/meshlet/node/node1/../x"),
    ("empty node name", f"spiffe://{TD}/meshlet/node/"),
]
UNICODE_HOSTILE = [
    ("Cyrillic e", f"spiffe://{TD}/ns/mesh/sa/w\u0435b"),
    ("fullwidth letters", f"spiffe://{TD}/ns/mesh/sa/\uff57\uff45\uff42"),
    ("Arabic-Indic digit", f"spiffe://{TD}/ns/mesh/sa/web\u0668"),
    ("Cyrillic o in trust domain", "spiffe://cluster.l\u043ecal/ns/mesh/sa/web"),
    ("fullwidth node name", f"spiffe://{TD}/meshlet/node/\uff4e1"),
]


@pytest.mark.parametrize(("what", "uri"), ASCII_HOSTILE, ids=[w for w, _ in ASCII_HOSTILE])
def test_sign_csr_refuses_a_non_canonical_identity(ca: CertificateAuthority, what: str, uri: str) -> None:
    _, csr = new_csr(uri)
    assert CertificateAuthority.requested_spiffe_id(csr) == uri  # the CSR does carry it
    with pytest.raises(CAError, match="is not a SPIFFE ID in trust domain cluster.local"):
        ca.sign_csr(csr, uri, DEFAULT_TTL)


@pytest.mark.parametrize(
    ("what", "uri"), ASCII_HOSTILE + UNICODE_HOSTILE, ids=[w for w, _ in ASCII_HOSTILE + UNICODE_HOSTILE]
)
def test_the_ca_issues_nothing_for_a_non_canonical_identity(ca: CertificateAuthority, what: str, uri: str) -> None:
    with pytest.raises(CAError, match="is not a SPIFFE ID in trust domain cluster.local"):
        ca.issue_key_and_cert(uri, DEFAULT_TTL)


@pytest.mark.parametrize(
    "uri",
    [WEB, f"spiffe://{TD}/ns/meshlet-system/sa/meshlet-control", f"spiffe://{TD}/meshlet/node/node-1.zone-a"],
)
def test_the_ca_signs_canonical_workload_and_node_identities(ca: CertificateAuthority, uri: str) -> None:
    _, issued = ca.issue_key_and_cert(uri, DEFAULT_TTL)
    leaf = x509.load_pem_x509_certificate(issued.chain_pem[0].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [uri]


@pytest.mark.parametrize("trust_domain", ["cluster.local\n", "Cluster.local", "cluster.l\u043ecal", "td/x", ""])
def test_the_ca_refuses_a_bad_trust_domain(tmp_path: Path, trust_domain: str) -> None:
    with pytest.raises(CAError, match="trust domain"):
        CertificateAuthority.load_or_create(tmp_path / "state", trust_domain)


@pytest.mark.parametrize("node", ["node1\n", "node1\x00", "n\u043ede1", "Node1", "node1/../x", "", "-node"])
def test_provisioning_refuses_a_bad_node_name(ca: CertificateAuthority, tmp_path: Path, node: str) -> None:
    with pytest.raises(ValueError, match="is not a valid Kubernetes node name"):
        NodeRegistry(tmp_path / "state", ca).provision(node, tmp_path / "out")
    assert not (tmp_path / "out").exists()
