"""The mesh certificate authority: signs the SPIFFE X.509 certificates that workloads and nodes present.

Control runs one CA per trust domain. By default it generates an ECDSA P-256 root at first start and keeps
it under the state directory, so certificates issued before a restart still verify after it. A user may plug
in their own CA certificate and key instead (usually an intermediate of an organisation's root); every chain
handed out then carries that intermediate. Leaves follow the X.509-SVID profile: exactly one URI SAN, the
SPIFFE ID, and an empty subject.

Which identity a caller may obtain is decided by the caller (control's certificate endpoint, which knows the
node and its pods); this module checks only that a request is well formed and stays in the trust domain.
It signs two kinds of identity, each matched in full with the parser ztunnel uses (`meshlet_contracts`):
workload identities `spiffe://<td>/ns/<ns>/sa/<sa>` in their one canonical form, and node identities
`spiffe://<td>/meshlet/node/<node>`. Nothing else: a URI that merely starts like one (`.../sa/web\n`) would
stand beside, yet differ from, the identity a policy names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from control.atomic import write_atomic
from meshlet_contracts.identity import DNS_SUBDOMAIN, IdentityError, check_trust_domain, parse_spiffe_id

DEFAULT_TTL = timedelta(hours=24)
ROOT_TTL = timedelta(days=3650)
# Certificates start a minute in the past so that a peer whose clock lags ours accepts them at once.
CLOCK_SKEW = timedelta(minutes=1)

_CAKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_E = TypeVar("_E", bound=x509.ExtensionType)
# What parsing untrusted certificates and CSRs may raise besides ValueError: cryptography parses extensions
# lazily and reports these two with their own exception types, and a version field other than v1 (CSR) or v3
# (certificate) as InvalidVersion, none of them ValueErrors.
_PARSE_ERRORS = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType, x509.InvalidVersion)


class CAError(Exception):
    """A certificate, key or CSR is unusable; the message says which file/field and why."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate just signed, with what its holder needs to present and renew it."""

    chain_pem: tuple[str, ...]
    """Leaf first, then intermediates up to (not including) the root."""
    not_after: datetime
    """End of the leaf's validity, timezone-aware UTC."""
    serial: int
    spiffe_id: str
    """The URI SAN put in the leaf."""


class CertificateAuthority:
    """Signs leaf certificates with one CA key. Build it with `load_or_create` or `from_files`."""

    trust_domain: str
    """Every identity this CA signs is `spiffe://<trust_domain>/...`."""
    root_pem: str
    """The trust bundle peers verify against: PEM of the root certificate."""

    def __init__(self, trust_domain: str, key: _CAKey, path: Sequence[x509.Certificate]) -> None:
        # `path` runs from our CA certificate (whose key `key` is) to the root, both included; they are the
        # same certificate when we hold the root itself. The constructors have validated it.
        self.trust_domain = trust_domain
        self.root_pem = _pem(path[-1])
        self._cert = path[0]
        self._key = key
        self._chain_pem = tuple(_pem(c) for c in path[:-1])  # peers have the root already
        # A leaf that outlived any certificate above it would stop verifying before its holder renews it.
        self._not_after = min(c.not_valid_after_utc for c in path)
        ski = _ext(self._cert.extensions, x509.SubjectKeyIdentifier)
        # The AKI must repeat the issuer's SKI byte for byte, or path building may not find the issuer.
        self._aki = (
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
            if ski is None
            else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        )

    @classmethod
    def load_or_create(cls, state_dir: Path, trust_domain: str) -> CertificateAuthority:
        """The CA kept in `state_dir/ca`, its root generated on first start.

        The root must survive restarts: every certificate and trust bundle handed out points at it. So a file
        that exists but cannot be used is for a person to look at, never a reason to make a new root over it.
        """
        _check_trust_domain(trust_domain)
        key_path, cert_path = state_dir / "ca" / "root-key.pem", state_dir / "ca" / "root-cert.pem"
        present = [p for p in (key_path, cert_path) if p.exists()]
        if len(present) == 1:
            missing = cert_path if present[0] == key_path else key_path
            raise CAError(
                f"{missing}: missing while {present[0].name} exists; restore it, or remove both files to generate "
                "a new root CA (certificates issued by the old one then stop verifying)"
            )
        if present:
            return cls.from_files(cert_path, key_path, trust_domain)
        key = ec.generate_private_key(ec.SECP256R1())
        root = _new_root(key, trust_domain)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(key_path, _key_pem(key), 0o600)
        write_atomic(cert_path, root.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(trust_domain, key, [root])

    @classmethod
    def from_files(
        cls, cert_path: Path, key_path: Path, trust_domain: str, root_path: Path | None = None
    ) -> CertificateAuthority:
        """A plug-in CA: the user's CA certificate and key, checked before anything is signed with them.

        `cert_path` holds the CA certificate, optionally followed by the intermediates above it. Without
        `root_path` the last certificate there must be self-signed and is the root; with it, the file's
        certificates must chain up to that root, and every issued chain carries them.
        """
        _check_trust_domain(trust_domain)
        certs = _load_certs(cert_path)
        key = _load_key(key_path)
        if _spki(certs[0].public_key()) != _spki(key.public_key()):
            raise CAError(f"{key_path}: this key does not belong to the certificate in {cert_path}")
        if root_path is None:
            root, root_file = certs[-1], cert_path
        else:
            root, root_file = _load_certs(root_path)[0], root_path
        chain = [c for c in certs if c != root]
        now = datetime.now(UTC)
        for c in chain:
            _check_ca_cert(c, cert_path, now)
        _check_ca_cert(root, root_file, now)
        if not _issued_by(root, root):
            hint = "" if root_path else "; give the root certificate it chains to as well"
            raise CAError(f"{root_file}: {_subject(root)} is not self-signed, so it cannot be a root{hint}")
        for child, parent in zip(chain, [*chain, root][1:], strict=True):
            if not _issued_by(child, parent):
                raise CAError(f"{cert_path}: {_subject(child)} is not signed by {_subject(parent)}")
        return cls(trust_domain, key, [*chain, root])

    def sign_csr(self, csr_pem: bytes, spiffe_id: str, ttl: timedelta) -> Issued:
        """Sign a holder's CSR for `spiffe_id`, which the caller has decided the holder may have.

        Only the CSR's public key goes into the certificate; everything else comes from us. Its SANs are still
        checked, so that a client asking for something else learns it now rather than receiving a certificate
        that does not say what it expected.
        """
        csr = _load_csr(csr_pem)
        key = csr.public_key()
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
            raise CAError(f"CSR: its key is {_describe_key(key)}; workload keys must be ECDSA P-256")
        names = _ext(csr.extensions, x509.SubjectAlternativeName)
        if names is not None:
            uris = names.get_values_for_type(x509.UniformResourceIdentifier)
            if uris != [spiffe_id] or len(uris) != len(names):
                asked = ", ".join(_describe_name(n) for n in names) or "no names"
                raise CAError(f"CSR: it asks for {asked}, but may ask only for URI {spiffe_id}")
        return self._issue(key, spiffe_id, ttl)

    @staticmethod
    def requested_spiffe_id(csr_pem: bytes) -> str:
        """The identity a CSR asks for: its single URI SAN."""
        names = _ext(_load_csr(csr_pem).extensions, x509.SubjectAlternativeName)
        uris = [] if names is None else names.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) != 1:
            raise CAError(f"CSR: it must carry exactly one URI SAN (its SPIFFE ID), found {len(uris)}")
        return uris[0]

    def issue_key_and_cert(
        self, spiffe_id: str, ttl: timedelta, dns_names: Sequence[str] = (), ips: Sequence[str] = ()
    ) -> tuple[bytes, Issued]:
        """A new P-256 key (PKCS8 PEM) and its certificate: node credentials, control's serving certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        return _key_pem(key), self._issue(key.public_key(), spiffe_id, ttl, dns_names, ips)

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        spiffe_id: str,
        ttl: timedelta,
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> Issued:
        self._check_id(spiffe_id)
        if ttl <= timedelta(0):
            raise CAError(f"ttl: must be positive, got {ttl}")
        now = datetime.now(UTC)
        not_after = min(now + ttl, self._not_after)
        if not_after <= now:
            raise CAError(f"the CA expired at {self._not_after:%Y-%m-%d %H:%M} UTC; nothing it signs would verify")
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        names += [x509.DNSName(d) for d in dns_names]
        for ip in ips:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError as exc:
                raise CAError(f"ips: {ip!r} is not an IP address") from exc
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())  # 159 random bits, as CA/B forum rules ask
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            # The identity is the URI SAN; with an empty subject RFC 5280 requires the SAN to be critical.
            .add_extension(x509.SubjectAlternativeName(names), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._aki, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return Issued((_pem(leaf), *self._chain_pem), leaf.not_valid_after_utc, leaf.serial_number, spiffe_id)

    def _check_id(self, spiffe_id: str) -> None:
        """A workload identity in canonical form, or a node identity, of our trust domain; CAError otherwise."""
        prefix = f"spiffe://{self.trust_domain}/"
        node = spiffe_id.removeprefix(f"{prefix}meshlet/node/")
        if node != spiffe_id and DNS_SUBDOMAIN.fullmatch(node):
            return
        try:
            identity = parse_spiffe_id(spiffe_id)
        except IdentityError as exc:
            raise CAError(
                f"{spiffe_id!r} is not a SPIFFE ID in trust domain {self.trust_domain} "
                f"({prefix}ns/<namespace>/sa/<service-account> or {prefix}meshlet/node/<node>): {exc}"
            ) from None
        if identity.trust_domain != self.trust_domain or identity.uri != spiffe_id:
            raise CAError(f"{spiffe_id!r} is not a SPIFFE ID in trust domain {self.trust_domain}")


def peer_spiffe_id(cert_der: bytes) -> str | None:
    """The URI SAN of a peer's DER certificate (after TLS verified its chain), or None when it has none.

    Raises CAError for an unparsable certificate or several URI SANs: an X.509-SVID has exactly one, and
    guessing which one is meant would be an authorization decision made by accident.
    """
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        names = _ext(cert.extensions, x509.SubjectAlternativeName)
    except _PARSE_ERRORS as exc:
        raise CAError(f"peer certificate: not a DER certificate ({exc})") from exc
    uris = [] if names is None else names.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) > 1:
        raise CAError(f"peer certificate: {len(uris)} URI SANs ({', '.join(uris)}); an X.509-SVID has one")
    return uris[0] if uris else None


def cert_not_after(cert_pem: bytes) -> datetime:
    """When the first certificate of a PEM chain expires (timezone-aware UTC): holders renew from it."""
    try:
        return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
    except ValueError as exc:
        raise CAError(f"certificate: not a PEM certificate ({exc})") from exc


def _new_root(key: ec.EllipticCurvePrivateKey, trust_domain: str) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, "meshlet root CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(
    *, digital_signature: bool = False, key_agreement: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_trust_domain(trust_domain: str) -> None:
    try:
        check_trust_domain(trust_domain)
    except IdentityError as exc:
        raise CAError(str(exc)) from None


def _check_ca_cert(cert: x509.Certificate, path: Path, now: datetime) -> None:
    constraints = _ext(cert.extensions, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CAError(f"{path}: {_subject(cert)} is not a CA certificate (it lacks BasicConstraints ca=True)")
    usage = _ext(cert.extensions, x509.KeyUsage)  # absent means unrestricted (RFC 5280 4.2.1.3)
    if usage is not None and not usage.key_cert_sign:
        raise CAError(f"{path}: {_subject(cert)} may not sign certificates (its KeyUsage lacks keyCertSign)")
    if cert.not_valid_after_utc <= now:
        raise CAError(f"{path}: {_subject(cert)} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        raise CAError(f"{path}: {_subject(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CAError(f"{path}: cannot read it ({exc.strerror})") from exc


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path))
        for c in certs:
            _ = c.extensions  # parsed lazily: fail here, naming the file, if one is malformed
    except _PARSE_ERRORS as exc:
        raise CAError(f"{path}: not a usable PEM certificate ({exc})") from exc
    return certs


def _load_key(path: Path) -> _CAKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except TypeError as exc:
        raise CAError(f"{path}: the key is encrypted; supply it unencrypted and protect the file instead") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CAError(f"{path}: not a usable PEM private key ({exc})") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    raise CAError(f"{path}: the key is {_describe_key(key.public_key())}; a CA key must be ECDSA P-256 or RSA >= 2048")


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        _ = csr.extensions  # parsed lazily: fail here if one is malformed
        valid = csr.is_signature_valid
    except (*_PARSE_ERRORS, UnsupportedAlgorithm) as exc:
        raise CAError(f"CSR: not a usable PEM certificate signing request ({exc})") from exc
    if not valid:
        raise CAError("CSR: its signature does not verify; it was altered or not signed with the key it carries")
    return csr


def _ext(exts: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return exts.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__.removeprefix("_")


def _describe_name(name: x509.GeneralName) -> str:
    kinds = {x509.UniformResourceIdentifier: "URI", x509.DNSName: "DNS", x509.IPAddress: "IP"}
    return f"{kinds.get(type(name), type(name).__name__)} {name.value}"


def _subject(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string()) if len(cert.subject) else "(empty subject)"


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: _CAKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
