"""Node credentials (local mode): provisioned per node when the node is created, checked on every request.

A node credential is a key and a certificate from the mesh CA for `spiffe://<td>/meshlet/node/<name>`.
`provision` writes the key, the certificate and the trust bundle into a directory for the node's agent
and ztunnel, and registers the certificate's fingerprint under the state directory, so a node removed
from the registry (or re-provisioned) can no longer use an older certificate, even one that is still
valid. On Kubernetes the node authenticates with its ServiceAccount token instead (control/node_tokens.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from control.atomic import write_atomic
from control.ca import CAError, CertificateAuthority, peer_spiffe_id
from meshlet_contracts.identity import DNS_SUBDOMAIN
from meshlet_contracts.wire import node_spiffe_id

NODE_NAME = DNS_SUBDOMAIN
"""A Kubernetes node name (RFC 1123 subdomain), matched in full: the CA signs node identities with it only."""
NODE_CREDENTIAL_TTL = timedelta(days=365)


class NodeAuthError(Exception):
    """A request did not come from a provisioned node; `reason` is a short label for metrics, `status` the HTTP
    status to answer (401, or 503 when the node could not be checked at all: retry)."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        self.reason = reason
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class NodeCredentialFiles:
    """Where a provisioned node finds its credential."""

    key: Path
    cert: Path
    root: Path


def fingerprint(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()


class NodeRegistry:
    """Provisioned nodes, persisted as one JSON file per node under `<state>/nodes/`."""

    def __init__(self, state_dir: Path, ca: CertificateAuthority) -> None:
        self.directory = state_dir / "nodes"
        self.ca = ca

    def provision(self, node: str, out_dir: Path) -> NodeCredentialFiles:
        if not NODE_NAME.fullmatch(node):
            raise ValueError(f"node name {node!r} is not a valid Kubernetes node name")
        key_pem, issued = self.ca.issue_key_and_cert(node_spiffe_id(self.ca.trust_domain, node), NODE_CREDENTIAL_TTL)
        leaf = x509.load_pem_x509_certificate(issued.chain_pem[0].encode())
        out_dir.mkdir(parents=True, exist_ok=True)
        files = NodeCredentialFiles(out_dir / "node-key.pem", out_dir / "node-cert.pem", out_dir / "root-cert.pem")
        write_atomic(files.key, key_pem, 0o600)
        write_atomic(files.cert, "".join(issued.chain_pem).encode(), 0o644)
        write_atomic(files.root, self.ca.root_pem.encode(), 0o644)
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "node": node,
            "fingerprint": fingerprint(leaf.public_bytes(Encoding.DER)),
            "notAfter": issued.not_after.isoformat(),
        }
        write_atomic(self.directory / f"{node}.json", json.dumps(record).encode(), 0o600)
        return files

    def authenticate(self, cert_der: bytes | None) -> str:
        """The node a (chain-verified) client certificate belongs to; NodeAuthError when it is none."""
        if cert_der is None:
            raise NodeAuthError(
                "no_node_credential", "no client certificate: present the node credential (node-cert.pem)"
            )
        try:
            uri = peer_spiffe_id(cert_der) or ""
        except CAError as exc:
            raise NodeAuthError("not_a_node", f"unusable client certificate: {exc}") from None
        prefix = f"spiffe://{self.ca.trust_domain}/meshlet/node/"
        if not uri.startswith(prefix):
            raise NodeAuthError("not_a_node", f"certificate identity {uri or '(none)'} is not a node of this mesh")
        node = uri.removeprefix(prefix)
        if not NODE_NAME.fullmatch(node):  # also keeps the name from leaving our directory as a path
            raise NodeAuthError("not_a_node", f"certificate identity {uri!r} does not name a node")
        try:
            record = json.loads((self.directory / f"{node}.json").read_text())
        except (OSError, ValueError):
            raise NodeAuthError("unknown_node", f"node {node!r} is not provisioned") from None
        if record.get("fingerprint") != fingerprint(cert_der):
            raise NodeAuthError("stale_node_credential", f"node {node!r} presented a superseded credential")
        return node
