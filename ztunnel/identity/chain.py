"""A workload certificate's chain as `meshlet certs` shows it: each certificate of it, the root last, with its
serial, validity window and state.

The state is read against now: `valid`, `not yet valid`, `expiring` (three quarters of its life gone: ztunnel
renews a leaf at half life, so a leaf this old means renewal keeps failing), `expired`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from ztunnel.identity.manager import WorkloadCertificate


def describe(cert: WorkloadCertificate, now: datetime | None = None) -> list[dict[str, Any]]:
    """The chain ztunnel presents (leaf first), then the root it trusts: one entry each."""
    when = now or datetime.now(UTC)
    pems = [*cert.chain_pem, cert.root_pem]
    out = []
    for i, pem in enumerate(pems):
        parsed = x509.load_pem_x509_certificate(pem.encode())
        role = "root" if i == len(pems) - 1 else ("leaf" if i == 0 else "intermediate")
        out.append(
            {
                "role": role,
                "subject": _name(parsed),
                "serial": f"{parsed.serial_number:x}",
                "notBefore": parsed.not_valid_before_utc.isoformat(),
                "notAfter": parsed.not_valid_after_utc.isoformat(),
                "state": state(parsed.not_valid_before_utc, parsed.not_valid_after_utc, when),
            }
        )
    return out


def state(not_before: datetime, not_after: datetime, now: datetime) -> str:
    if now < not_before:
        return "not yet valid"
    if now >= not_after:
        return "expired"
    if now >= not_before + (not_after - not_before) * 3 / 4:
        return "expiring"
    return "valid"


def _name(cert: x509.Certificate) -> str:
    """The SPIFFE ID of a workload certificate (its URI SAN), else the subject."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return uris[0] if uris else cert.subject.rfc4514_string()
