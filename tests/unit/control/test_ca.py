"""The mesh CA: a persisted root, plug-in CAs, CSR checks, and certificates that real TLS accepts."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from control.ca import (
    DEFAULT_TTL,
    CAError,
    CertificateAuthority,
    Issued,
    cert_not_after,
    peer_spiffe_id,
)
from meshlet_contracts.wire import node_spiffe_id, spiffe_id
from ztunnel.identity.manager import new_csr

TD = "example.org"
ALICE = spiffe_id(TD, "default", "alice")

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# --- helpers: a test organisation's own PKI, for plug-in CAs ---------------------------------------------


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca_cert(
    cn: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None = None,
    *,
    not_after: datetime | None = None,
    ca: bool = True,
    key_cert_sign: bool = True,
) -> x509.Certificate:
    """A CA certificate for `key`, self-signed unless `issuer` (certificate, key) is given."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        ski = issuer[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(*objs: x509.Certificate | Key) -> bytes:
    out = b""
    for obj in objs:
        if isinstance(obj, x509.Certificate):
            out += obj.public_bytes(serialization.Encoding.PEM)
        else:
            out += obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
    return out


def _write(path: Path, *objs: x509.Certificate | Key) -> Path:
    path.write_bytes(_pem(*objs))
    return path


def _leaf(issued: Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.chain_pem[0].encode())


def _verify_chain(issued: Issued, root_pem: str) -> list[x509.GeneralName]:
    """Full RFC 5280 path validation of an issued chain against the root, as a TLS peer would do it."""
    root = x509.load_pem_x509_certificate(root_pem.encode())
    intermediates = [x509.load_pem_x509_certificate(p.encode()) for p in issued.chain_pem[1:]]
    verified = PolicyBuilder().store(Store([root])).build_client_verifier().verify(_leaf(issued), intermediates)
    return list(verified.subjects or [])


@dataclass
class OrgPKI:
    """A test organisation's root and an intermediate it issued for the mesh, on disk."""

    root: x509.Certificate
    inter: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    root_path: Path
    inter_path: Path
    inter_key_path: Path


@pytest.fixture
def org(tmp_path: Path) -> OrgPKI:
    root_key, inter_key = _ec_key(), _ec_key()
    root = _ca_cert("Org Root", root_key)
    inter = _ca_cert("Org Mesh Intermediate", inter_key, (root, root_key))
    return OrgPKI(
        root,
        inter,
        inter_key,
        _write(tmp_path / "root-cert.pem", root),
        _write(tmp_path / "ca-cert.pem", inter),
        _write(tmp_path / "ca-key.pem", inter_key),
    )


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "state", TD)


# --- the generated root --------------------------------------------------------------------------------


def test_root_is_generated_once_and_kept_across_restarts(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(tmp_path, TD)
    key_path, cert_path = tmp_path / "ca" / "root-key.pem", tmp_path / "ca" / "root-cert.pem"
    key_bytes, cert_bytes = key_path.read_bytes(), cert_path.read_bytes()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    issued_before = first.sign_csr(new_csr(ALICE)[1], ALICE, DEFAULT_TTL)

    second = CertificateAuthority.load_or_create(tmp_path, TD)

    assert (key_path.read_bytes(), cert_path.read_bytes()) == (key_bytes, cert_bytes)
    assert second.root_pem == first.root_pem == cert_bytes.decode()
    # What a workload got before the restart still verifies against the bundle handed out after it.
    assert _verify_chain(issued_before, second.root_pem) == [x509.UniformResourceIdentifier(ALICE)]
    assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == ["root-cert.pem", "root-key.pem"]


def test_a_broken_key_file_is_reported_and_never_replaced(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, TD)
    key_path = tmp_path / "ca" / "root-key.pem"
    key_path.write_bytes(b"-----BEGIN PRIVATE KEY-----\ntruncated\n")

    with pytest.raises(CAError, match=rf"^{key_path}: not a usable PEM private key"):
        CertificateAuthority.load_or_create(tmp_path, TD)
    assert key_path.read_bytes() == b"-----BEGIN PRIVATE KEY-----\ntruncated\n"


def test_a_lost_root_certificate_is_reported_and_never_regenerated(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, TD)
    (tmp_path / "ca" / "root-cert.pem").unlink()

    with pytest.raises(CAError, match=r"root-cert.pem: missing while root-key.pem exists"):
        CertificateAuthority.load_or_create(tmp_path, TD)
    assert not (tmp_path / "ca" / "root-cert.pem").exists()


# --- signing CSRs --------------------------------------------------------------------------------------


def test_sign_csr_issues_an_x509_svid_for_the_id(ca: CertificateAuthority) -> None:
    ttl = timedelta(hours=3)
    issued = ca.sign_csr(new_csr(ALICE)[1], ALICE, ttl)
    leaf = _leaf(issued)
    now = datetime.now(UTC)

    assert issued.spiffe_id == ALICE and len(issued.chain_pem) == 1  # the root itself is not sent
    assert _verify_chain(issued, ca.root_pem) == [x509.UniformResourceIdentifier(ALICE)]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.root_pem.encode()))
    assert peer_spiffe_id(leaf.public_bytes(serialization.Encoding.DER)) == ALICE
    assert len(leaf.subject) == 0
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_agreement
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued.not_after == leaf.not_valid_after_utc == cert_not_after(issued.chain_pem[0].encode())
    assert abs(issued.not_after - (now + ttl)) < timedelta(seconds=5)
    assert abs(leaf.not_valid_before_utc - (now - timedelta(minutes=1))) < timedelta(seconds=5)
    assert issued.serial == leaf.serial_number and 0 < issued.serial < 2**159


def test_ttl_is_capped_by_the_ca_expiry(ca: CertificateAuthority) -> None:
    root = x509.load_pem_x509_certificate(ca.root_pem.encode())
    issued = ca.sign_csr(new_csr(ALICE)[1], ALICE, timedelta(days=365 * 20))
    assert issued.not_after == root.not_valid_after_utc


def _csr(names: list[x509.GeneralName], key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return builder.sign(key or _ec_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _tampered_csr() -> bytes:
    """Alice's CSR with the name changed to Mally's after signing: what an attacker on the path could send."""
    der = x509.load_pem_x509_csr(new_csr(ALICE)[1]).public_bytes(serialization.Encoding.DER)
    assert der.count(b"/sa/alice") == 1
    tampered = der.replace(b"/sa/alice", b"/sa/mally")
    return x509.load_der_x509_csr(tampered).public_bytes(serialization.Encoding.PEM)


MALLY = spiffe_id(TD, "default", "mally")


@pytest.mark.parametrize(
    ("make_csr", "asked_id", "message"),
    [
        pytest.param(
            lambda: new_csr(MALLY)[1],
            ALICE,
            rf"^CSR: it asks for URI {MALLY}, but may ask only for URI {ALICE}$",
            id="other-uri",
        ),
        pytest.param(
            lambda: _csr([x509.UniformResourceIdentifier(ALICE), x509.DNSName("evil.example")]),
            ALICE,
            rf"^CSR: it asks for URI {ALICE}, DNS evil.example, but may ask only for URI {ALICE}$",
            id="extra-dns",
        ),
        pytest.param(
            lambda: _csr([x509.UniformResourceIdentifier(ALICE)], rsa.generate_private_key(65537, 2048)),
            ALICE,
            r"^CSR: its key is RSA 2048; workload keys must be ECDSA P-256$",
            id="rsa-key",
        ),
        pytest.param(_tampered_csr, MALLY, r"^CSR: its signature does not verify", id="bad-signature"),
        pytest.param(lambda: b"hello", ALICE, r"^CSR: not a usable PEM certificate signing request", id="not-pem"),
        pytest.param(
            lambda: new_csr("spiffe://other.org/ns/default/sa/alice")[1],
            "spiffe://other.org/ns/default/sa/alice",
            r"is not a SPIFFE ID in trust domain example.org",
            id="other-trust-domain",
        ),
    ],
)
def test_sign_csr_refuses_bad_requests(
    ca: CertificateAuthority, make_csr: Callable[[], bytes], asked_id: str, message: str
) -> None:
    with pytest.raises(CAError, match=message):
        ca.sign_csr(make_csr(), asked_id, DEFAULT_TTL)


def test_requested_spiffe_id_reads_the_single_uri_san() -> None:
    assert CertificateAuthority.requested_spiffe_id(new_csr(ALICE)[1]) == ALICE
    with pytest.raises(CAError, match=r"exactly one URI SAN .*found 0"):
        CertificateAuthority.requested_spiffe_id(_csr([]))
    with pytest.raises(CAError, match=r"exactly one URI SAN .*found 2"):
        CertificateAuthority.requested_spiffe_id(
            _csr([x509.UniformResourceIdentifier(ALICE), x509.UniformResourceIdentifier(MALLY)])
        )
    with pytest.raises(CAError, match=r"signature does not verify"):
        CertificateAuthority.requested_spiffe_id(_tampered_csr())


def test_issue_key_and_cert_carries_dns_and_ip_sans(ca: CertificateAuthority) -> None:
    node = node_spiffe_id(TD, "node-1")
    key_pem, issued = ca.issue_key_and_cert(node, DEFAULT_TTL, dns_names=["control.local"], ips=["127.0.0.1"])
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert _leaf(issued).public_key() == key.public_key()
    sans = _leaf(issued).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [node]
    assert sans.get_values_for_type(x509.DNSName) == ["control.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(CAError, match=r"ips: 'localhost' is not an IP address"):
        ca.issue_key_and_cert(node, DEFAULT_TTL, ips=["localhost"])


def test_peer_spiffe_id_is_none_without_a_uri_san(org: OrgPKI) -> None:
    assert peer_spiffe_id(org.root.public_bytes(serialization.Encoding.DER)) is None


# --- plug-in CAs ---------------------------------------------------------------------------------------


def test_plug_in_intermediate_signs_chains_that_carry_it(org: OrgPKI) -> None:
    ca = CertificateAuthority.from_files(org.inter_path, org.inter_key_path, TD, root_path=org.root_path)
    issued = ca.sign_csr(new_csr(ALICE)[1], ALICE, DEFAULT_TTL)

    assert ca.root_pem == _pem(org.root).decode()
    assert issued.chain_pem[1:] == (_pem(org.inter).decode(),)
    _leaf(issued).verify_directly_issued_by(org.inter)
    assert _verify_chain(issued, ca.root_pem) == [x509.UniformResourceIdentifier(ALICE)]


def test_plug_in_chain_file_ending_in_the_root_needs_no_root_path(org: OrgPKI, tmp_path: Path) -> None:
    chain_path = _write(tmp_path / "cert-chain.pem", org.inter, org.root)
    ca = CertificateAuthority.from_files(chain_path, org.inter_key_path, TD)
    issued = ca.sign_csr(new_csr(ALICE)[1], ALICE, DEFAULT_TTL)
    assert ca.root_pem == _pem(org.root).decode()
    assert _verify_chain(issued, ca.root_pem) == [x509.UniformResourceIdentifier(ALICE)]


def test_plug_in_rsa_root_is_accepted(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    ca = CertificateAuthority.from_files(
        _write(tmp_path / "ca.pem", _ca_cert("RSA Root", key)), _write(tmp_path / "key.pem", key), TD
    )
    issued = ca.sign_csr(new_csr(ALICE)[1], ALICE, DEFAULT_TTL)
    assert _verify_chain(issued, ca.root_pem) == [x509.UniformResourceIdentifier(ALICE)]


def test_plug_in_ttl_is_capped_by_the_intermediate_expiry(org: OrgPKI, tmp_path: Path) -> None:
    key = _ec_key()
    # A second intermediate that expires long before the others: leaves must not outlive it.
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    sub = _ca_cert("Short-lived", key, (org.inter, org.inter_key), not_after=soon)
    ca = CertificateAuthority.from_files(
        _write(tmp_path / "sub.pem", sub, org.inter), _write(tmp_path / "sub-key.pem", key), TD, org.root_path
    )
    issued = ca.sign_csr(new_csr(ALICE)[1], ALICE, DEFAULT_TTL)
    assert issued.not_after == soon
    assert len(issued.chain_pem) == 3
    assert _verify_chain(issued, ca.root_pem) == [x509.UniformResourceIdentifier(ALICE)]


def _refusal_cases(org: OrgPKI, tmp: Path) -> dict[str, tuple[Path, Path, Path | None]]:
    """Name -> (cert_path, key_path, root_path) of plug-in material that must be refused."""
    key, key_path = _ec_key(), tmp / "other-key.pem"
    _write(key_path, key)
    stranger_key = _ec_key()
    stranger = _ca_cert("Stranger", stranger_key)
    small = rsa.generate_private_key(65537, 1024)
    past = datetime.now(UTC) - timedelta(days=1)
    return {
        "does not belong to the certificate": (org.inter_path, key_path, org.root_path),
        "is not a CA certificate": (_write(tmp / "leafish.pem", _ca_cert("X", key, ca=False)), key_path, None),
        "KeyUsage lacks keyCertSign": (
            _write(tmp / "nosign.pem", _ca_cert("X", key, key_cert_sign=False)),
            key_path,
            None,
        ),
        "expired at": (_write(tmp / "old.pem", _ca_cert("X", key, not_after=past)), key_path, None),
        "the key is RSA 1024": (
            _write(tmp / "small.pem", _ca_cert("X", small)),
            _write(tmp / "small-key.pem", small),
            None,
        ),
        "is not self-signed": (org.inter_path, org.inter_key_path, None),
        "is not signed by 'CN=Stranger'": (org.inter_path, org.inter_key_path, _write(tmp / "s.pem", stranger)),
        "cannot read it": (tmp / "nowhere.pem", key_path, None),
    }


@pytest.mark.parametrize(
    "reason",
    [
        "does not belong to the certificate",
        "is not a CA certificate",
        "KeyUsage lacks keyCertSign",
        "expired at",
        "the key is RSA 1024",
        "is not self-signed",
        "is not signed by 'CN=Stranger'",
        "cannot read it",
    ],
)
def test_plug_in_refuses_unusable_material(org: OrgPKI, tmp_path: Path, reason: str) -> None:
    cert_path, key_path, root_path = _refusal_cases(org, tmp_path)[reason]
    with pytest.raises(CAError) as caught:
        CertificateAuthority.from_files(cert_path, key_path, TD, root_path)
    message = str(caught.value)
    assert reason in message
    assert message.startswith((f"{cert_path}:", f"{key_path}:", f"{root_path}:")), message


# --- real TLS --------------------------------------------------------------------------------------------


def _context(side: int, ca: CertificateAuthority, key_pem: bytes, issued: Issued, tmp: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Python 3.13 turns strict RFC 5280 checks on by default; our certificates must pass them already.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(cadata=ca.root_pem)
    cert_file, key_file = tmp / f"{side}-chain.pem", tmp / f"{side}-key.pem"
    cert_file.write_text("".join(issued.chain_pem))
    key_file.write_bytes(key_pem)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[dict[str, object], bytes | Exception]:
    """One TLS connection over a socketpair: what the server saw, and what the client read (or its error)."""
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(10)
    client_sock.settimeout(10)
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(server_sock, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                seen["peer"] = peer_spiffe_id(der) if der else None
                seen["version"] = tls.version()
                tls.sendall(b"hello")
        except (OSError, CAError) as exc:
            seen["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    got: bytes | Exception
    try:
        with client.wrap_socket(client_sock, server_hostname="localhost") as tls:
            got = tls.recv(5)
    except OSError as exc:  # in TLS 1.3 a refused client certificate surfaces on the first read
        got = exc
    finally:
        thread.join(timeout=10)
        server_sock.close()
        client_sock.close()
    assert not thread.is_alive(), "the server side of the handshake did not finish"
    return seen, got


def _server_and_client(ca: CertificateAuthority, tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    tmp.mkdir(exist_ok=True)
    server_key, server_cert = ca.issue_key_and_cert(
        spiffe_id(TD, "default", "server"), DEFAULT_TTL, dns_names=["localhost"], ips=["127.0.0.1"]
    )
    client_key, csr = new_csr(ALICE)
    client_cert = ca.sign_csr(csr, ALICE, DEFAULT_TTL)
    return (
        _context(ssl.PROTOCOL_TLS_SERVER, ca, server_key, server_cert, tmp),
        _context(ssl.PROTOCOL_TLS_CLIENT, ca, client_key, client_cert, tmp),
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["generated", "plug-in"])
def test_tls13_mutual_handshake_shows_the_client_identity(kind: str, org: OrgPKI, tmp_path: Path) -> None:
    ca = (
        CertificateAuthority.load_or_create(tmp_path / "state", TD)
        if kind == "generated"
        else CertificateAuthority.from_files(org.inter_path, org.inter_key_path, TD, org.root_path)
    )
    server, client = _server_and_client(ca, tmp_path)

    seen, got = _handshake(server, client)

    assert "error" not in seen, seen
    assert seen == {"peer": ALICE, "version": "TLSv1.3"}
    assert got == b"hello"


@pytest.mark.timeout(30)
def test_tls_refuses_a_client_certificate_from_another_ca(tmp_path: Path) -> None:
    ours = CertificateAuthority.load_or_create(tmp_path / "ours", TD)
    theirs = CertificateAuthority.load_or_create(tmp_path / "theirs", TD)
    server, _ = _server_and_client(ours, tmp_path / "s")
    _, client = _server_and_client(theirs, tmp_path / "c")
    client.load_verify_locations(cadata=ours.root_pem)  # the client trusts our server; we must not trust it

    seen, got = _handshake(server, client)

    assert isinstance(seen.get("error"), ssl.SSLCertVerificationError) and "peer" not in seen
    assert isinstance(got, OSError)
