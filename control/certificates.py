"""The CSR endpoint: a node asks for the certificate of a workload identity that runs on it.

Control signs only identities that have a (running) pod scheduled on the asking node, so a compromised
node can obtain the identities of its own pods and no others. Every refusal has a reason a user can act
on; it is logged and counted by reason. The requested identity must parse strictly (the parser ztunnel
uses on the other side), and what is signed is the parsed identity's canonical URI.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from aiohttp import web

from control.ca import CAError, CertificateAuthority
from control.metrics import ControlMetrics
from control.store import ConfigStore
from meshlet_contracts import wire

log = logging.getLogger(__name__)
MAX_CSR_BYTES = 16 * 1024


class CertificateService:
    """Handles `POST /v1/certificates` {"csr": PEM} for an authenticated node."""

    def __init__(self, ca: CertificateAuthority, store: ConfigStore, metrics: ControlMetrics, ttl: timedelta) -> None:
        self.ca = ca
        self.store = store
        self.metrics = metrics
        self.ttl = ttl

    def _refuse(self, node: str, status: int, reason: str, message: str) -> web.Response:
        self.metrics.certs_refused.labels(reason).inc()
        log.warning("refused a certificate for node %s: %s", node, message)
        return web.json_response({"error": message, "reason": reason}, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        node: str = request["node"]
        if request.content_length is not None and request.content_length > MAX_CSR_BYTES:
            return self._refuse(node, 413, "bad_request", f"request larger than {MAX_CSR_BYTES} bytes")
        try:
            body = await request.json()
            csr_pem = body["csr"].encode()
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # 16 KiB of '[' nests too deep
            return self._refuse(node, 400, "bad_request", 'expected a JSON body {"csr": "<PEM>"}')
        if not self.store.synced:
            return self._refuse(node, 503, "not_ready", "control has not loaded its store yet; retry")
        try:
            requested = CertificateAuthority.requested_spiffe_id(csr_pem)
            identity = wire.parse_spiffe_id(requested)
        except (CAError, wire.IdentityError) as exc:
            return self._refuse(node, 400, "bad_csr", str(exc))
        if identity.trust_domain != self.ca.trust_domain:
            return self._refuse(
                node,
                403,
                "wrong_trust_domain",
                f"{identity.uri} is outside the trust domain {self.ca.trust_domain}",
            )
        pods = [
            p
            for p in self.store.pods_on_node(node)
            if p.namespace == identity.namespace and p.service_account == identity.service_account
        ]
        if not pods:
            return self._refuse(
                node,
                403,
                "no_pod_on_node",
                f"no running pod with service account {identity.namespace}/{identity.service_account} "
                f"is scheduled on node {node}",
            )
        try:
            # Strict parsing round-trips (`identity.uri == requested`), and sign_csr checks the CSR asks for it.
            issued = self.ca.sign_csr(csr_pem, identity.uri, self.ttl)
        except CAError as exc:
            return self._refuse(node, 400, "bad_csr", str(exc))
        self.metrics.certs_issued.inc()
        log.info("issued %s to node %s (expires %s)", identity.uri, node, issued.not_after.isoformat())
        return web.json_response(
            {
                "certificateChain": list(issued.chain_pem),
                "rootCertificate": self.ca.root_pem,
                "notAfter": issued.not_after.isoformat(),
                "spiffeId": identity.uri,
            }
        )
