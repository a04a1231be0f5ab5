"""`peer_identity` accepts only a canonical workload identity of our own trust domain.

Each certificate here chains to the mesh root (a test CA that signs whatever it is told, as a CA that let one
through would have), and ztunnel's own TLS contexts complete a real handshake with it in memory; what is
checked is the identity authorization would then see. The issue's case: a certificate for `.../sa/web\\n`
passed, and authorization compared `cluster.local/ns/mesh/sa/web\\n` with a DENY on `.../sa/web`.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ztunnel.identity.manager import WorkloadCertificate
from ztunnel.tls import PeerIdentityError, TlsContexts, peer_identity

TD = "cluster.local"
WEB = f"spiffe://{TD}/ns/mesh/sa/web"
SERVER = f"spiffe://{TD}/ns/mesh/sa/server"
HANDSHAKE_ROUNDS = 10


class MeshRoot:
    """A root CA that signs any URI SAN: the test stands in for a CA that got it wrong."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test mesh root")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def workload(self, uri: str) -> WorkloadCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        # Without validation: cryptography refuses non-ASCII URIs, which a hostile DER encoder would not.
        san = x509.UniformResourceIdentifier._init_without_validation(uri)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return WorkloadCertificate(
            spiffe_id=uri,
            key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            chain_pem=(leaf.public_bytes(serialization.Encoding.PEM).decode(),),
            root_pem=self.pem,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            fetched_at=now,
        )


def handshake(
    client_cert: WorkloadCertificate, server_cert: WorkloadCertificate
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake between ztunnel's client and server contexts over memory buffers."""
    contexts = TlsContexts()
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = contexts.client(client_cert).wrap_bio(c_in, c_out, server_side=False)
    server = contexts.server(server_cert).wrap_bio(s_in, s_out, server_side=True)
    for _ in range(HANDSHAKE_ROUNDS):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return client, server
    raise AssertionError(f"the handshake did not finish in {HANDSHAKE_ROUNDS} rounds")


@pytest.fixture(scope="module")
def root() -> MeshRoot:
    return MeshRoot()


HOSTILE = [
    ("trailing newline", WEB + "\n"),
    ("trailing CRLF", WEB + "\r\n"),
    ("trailing NUL", WEB + "\x00"),
    ("trailing space", WEB + " "),
    ("Cyrillic e", f"spiffe://{TD}/ns/mesh/sa/w\u0435b"),
    ("fullwidth letters", f"spiffe://{TD}/ns/mesh/sa/\uff57\uff45\uff42"),
    ("upper case", f"spiffe://{TD}/ns/mesh/sa/Web"),
    ("extra segment", WEB + "/x"),
    ("longer trust domain", "spiffe://cluster.local.evil/ns/mesh/sa/web"),
    ("same-prefix trust domain", "spiffe://cluster.localx/ns/mesh/sa/web"),
    ("other trust domain", "spiffe://evil.test/ns/mesh/sa/web"),
    ("node identity", f"spiffe://{TD}/meshlet/node/node1"),
]


@pytest.mark.parametrize(("what", "uri"), HOSTILE, ids=[w for w, _ in HOSTILE])
def test_a_client_certificate_with_a_non_canonical_identity_is_refused(root: MeshRoot, what: str, uri: str) -> None:
    client, server = handshake(root.workload(uri), root.workload(SERVER))
    seen = server.getpeercert()["subjectAltName"]  # type: ignore[index]
    assert seen == (("URI", uri),), "TLS itself let the certificate through: it chains to the root"
    with pytest.raises(PeerIdentityError):
        peer_identity(server, TD)
    assert peer_identity(client, TD) == SERVER  # the server's certificate is fine


@pytest.mark.parametrize(("what", "uri"), HOSTILE[:4], ids=[w for w, _ in HOSTILE[:4]])
def test_a_server_certificate_with_a_non_canonical_identity_is_refused(root: MeshRoot, what: str, uri: str) -> None:
    client, _ = handshake(root.workload(WEB), root.workload(uri))
    with pytest.raises(PeerIdentityError):
        peer_identity(client, TD)


def test_a_canonical_identity_is_returned_as_written(root: MeshRoot) -> None:
    client, server = handshake(root.workload(WEB), root.workload(SERVER))
    assert peer_identity(server, TD) == WEB
    assert peer_identity(client, TD) == SERVER
    with pytest.raises(PeerIdentityError):
        peer_identity(server, "cluster.loca")  # a trust domain that is a prefix of the peer's
