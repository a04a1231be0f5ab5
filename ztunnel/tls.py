"""TLS for HBONE: contexts per workload identity, and the peer's SPIFFE identity after a handshake.

Both sides speak TLS 1.3 only, ALPN `h2`, and require a certificate that chains to the mesh root.
Python's `ssl` cannot check a URI SAN, so hostname checking is off and the identity is checked by the
caller after the handshake (`peer_identity`): the client compares it with the destination workload's,
the server checks the trust domain and hands it to authorization. The URI is parsed with the same strict
parser control's CA signs with, and its trust domain compared exactly, so the identity authorization sees is
always canonical: never `.../sa/web\n` beside a policy naming `.../sa/web`, nor `spiffe://cluster.localx/...`.

Keys live in memory only: `ssl` loads a key only from a path, so the key and chain are written to an
anonymous memfd and loaded from `/proc/self/fd/N`; nothing touches a filesystem.
A context is built once per issued certificate and reused for every connection until renewal.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from meshlet_contracts.identity import IdentityError, parse_spiffe_id
from ztunnel.identity.manager import WorkloadCertificate

ALPN = "h2"


class PeerIdentityError(ssl.SSLError):
    """The peer's certificate chained to the root but does not carry the identity required."""


def _load_identity(ctx: ssl.SSLContext, cert: WorkloadCertificate) -> None:
    fd = os.memfd_create("meshlet-identity", os.MFD_CLOEXEC)
    try:
        data = "".join(cert.chain_pem).encode() + cert.key_pem
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _context(purpose: int, cert: WorkloadCertificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # SPIFFE identities are URI SANs: checked by peer_identity
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=cert.root_pem)
    ctx.set_alpn_protocols([ALPN])
    _load_identity(ctx, cert)
    return ctx


class TlsContexts:
    """Client and server contexts by identity; a renewed certificate is loaded into the same context."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], tuple[WorkloadCertificate, ssl.SSLContext]] = {}

    def client(self, cert: WorkloadCertificate) -> ssl.SSLContext:
        return self._get(ssl.PROTOCOL_TLS_CLIENT, cert)

    def server(self, cert: WorkloadCertificate) -> ssl.SSLContext:
        return self._get(ssl.PROTOCOL_TLS_SERVER, cert)

    def _get(self, purpose: int, cert: WorkloadCertificate) -> ssl.SSLContext:
        key = (purpose, cert.spiffe_id)
        hit = self._cache.get(key)
        if hit is None:
            ctx = _context(purpose, cert)
        elif hit[0] is not cert:
            # Renewed: load the new chain into the same context, which servers already hold; only
            # handshakes from now on use it.
            ctx = hit[1]
            _load_identity(ctx, cert)
        else:
            return hit[1]
        self._cache[key] = (cert, ctx)
        return ctx

    def forget(self, spiffe_ids: set[str]) -> None:
        """Drop contexts of identities no longer served here."""
        for key in [k for k in self._cache if k[1] not in spiffe_ids]:
            del self._cache[key]


def peer_identity(ssl_object: Any, trust_domain: str) -> str:
    """The peer certificate's SPIFFE URI, which must be a workload identity of `trust_domain`."""
    if ssl_object is None:
        raise PeerIdentityError("no TLS session")
    if ssl_object.selected_alpn_protocol() != ALPN:
        raise PeerIdentityError(f"ALPN {ssl_object.selected_alpn_protocol()!r} negotiated; HBONE needs {ALPN!r}")
    cert = ssl_object.getpeercert()
    uris = [value for kind, value in (cert or {}).get("subjectAltName", ()) if kind == "URI"]
    if len(uris) != 1:
        raise PeerIdentityError(f"peer certificate has {len(uris)} URI SANs; a workload certificate has one")
    uri = str(uris[0])
    try:
        identity = parse_spiffe_id(uri)
    except IdentityError as exc:
        raise PeerIdentityError(f"peer identity is not a workload identity: {exc}") from None
    if identity.trust_domain != trust_domain:
        raise PeerIdentityError(f"peer identity {uri!r} is not a workload of trust domain {trust_domain}")
    return identity.uri
