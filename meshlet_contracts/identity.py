"""SPIFFE workload identities: the one parser that the CA, control's certificate endpoint and ztunnel all use.

An identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. Every part is matched in
full (`re.fullmatch` on explicit ASCII classes): `$` would accept a trailing newline, `\\d` or `\\w` any
Unicode digit or letter, and either would let a certificate for `.../sa/web\\n` or `.../sa/wеb` (a Cyrillic
`е`) stand beside, yet differ from, the identity a policy names. Namespace and service account follow
Kubernetes' rules: a namespace is a DNS-1123 label, a service account name a DNS-1123 subdomain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NewType

SpiffeId = NewType("SpiffeId", str)

# SPIFFE's trust domain charset (lowercase letters, digits, '.', '-', '_'), at most 255 characters.
TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
# DNS-1123 label: namespaces (and service names).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# DNS-1123 subdomain: service account names (and most other object names), at most 253 characters.
DNS_SUBDOMAIN = re.compile(r"(?=[-a-z0-9.]{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_WORKLOAD = re.compile(r"spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)")
_ASCII_PORT = re.compile(r"[0-9]{1,5}")


class IdentityError(ValueError):
    """A SPIFFE ID, or one of its parts, does not follow the rules; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """A parsed workload SPIFFE ID; every field has passed its check."""

    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> SpiffeId:
        return SpiffeId(f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}")

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy `principals` use: the URI without `spiffe://`."""
        return self.uri.removeprefix("spiffe://")


def check_trust_domain(value: str) -> str:
    if not TRUST_DOMAIN.fullmatch(value):
        raise IdentityError(f"trust domain {value!r}: use lowercase ASCII letters, digits, '.', '-' and '_'")
    return value


def check_namespace(value: str) -> str:
    if not DNS_LABEL.fullmatch(value):
        raise IdentityError(f"namespace {value!r} is not a DNS-1123 label (lowercase a-z, 0-9, '-', at most 63)")
    return value


def check_service_account(value: str) -> str:
    if not DNS_SUBDOMAIN.fullmatch(value):
        raise IdentityError(
            f"service account {value!r} is not a DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.', at most 253)"
        )
    return value


def workload_identity(trust_domain: str, namespace: str, service_account: str) -> WorkloadIdentity:
    """Build an identity from its parts, checking each one."""
    return WorkloadIdentity(
        check_trust_domain(trust_domain), check_namespace(namespace), check_service_account(service_account)
    )


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
    """The URI of a workload identity; raises IdentityError for a part that breaks the rules."""
    return workload_identity(trust_domain, namespace, service_account).uri


def parse_spiffe_id(uri: str) -> WorkloadIdentity:
    """Parse a workload SPIFFE ID exactly; `parse_spiffe_id(x).uri == x` for every accepted `x`."""
    if not isinstance(uri, str):
        raise IdentityError(f"{uri!r} is not a string")
    m = _WORKLOAD.fullmatch(uri)
    if not m:
        raise IdentityError(f"{uri!r} is not a workload SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")
    try:
        return workload_identity(m.group(1), m.group(2), m.group(3))
    except IdentityError as exc:
        raise IdentityError(f"{uri!r}: {exc}") from None


def node_spiffe_id(trust_domain: str, node: str) -> SpiffeId:
    """The identity in a node credential: it can fetch config and certificates, and is no workload."""
    if not DNS_SUBDOMAIN.fullmatch(node):
        raise IdentityError(f"node name {node!r} is not a DNS-1123 subdomain")
    return SpiffeId(f"spiffe://{check_trust_domain(trust_domain)}/meshlet/node/{node}")


def parse_port(text: str) -> int:
    """A TCP port written in ASCII digits only (`int()` also takes '٨٠', ' 80' and '8_0'), 1-65535."""
    if not _ASCII_PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise IdentityError(f"port {text!r} is not a number from 1 to 65535 in ASCII digits")
    return int(text)
