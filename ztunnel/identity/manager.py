"""The identity manager: one key and certificate per service account with enrolled pods on this node.

Keys are generated here (ECDSA P-256), live in memory only and are never logged; control signs a CSR
for each identity after checking that a pod with it runs on this node. A certificate is fetched before
first use (concurrent callers share one request), renewed at half its life, and a failed fetch is
retried with exponential backoff and jitter while the current certificate (if any) keeps serving: up to
`AWAY_RETRY_MAX` apart while control does not answer (so a pod that started during a control outage gets its
certificate within about a second of control's return), up to `retry_max` when control answered with a refusal.
Whoever waits for an identity's first certificate (a pod's 15008 listener) is woken as it arrives (`wait_issued`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlet_contracts import wire
from meshlet_contracts.backoff import Backoff
from ztunnel.config.client import NodeCredential

log = logging.getLogger(__name__)
AWAY_RETRY_MAX = 1.0
"""Longest wait between tries while control cannot be reached (refused, reset, timed out): one small request per
identity, and a returning control is found within a second."""


class IdentityError(RuntimeError):
    """Control refused or failed to issue a certificate; the message carries control's reason."""


@dataclass(frozen=True, slots=True)
class WorkloadCertificate:
    """A key and the chain control issued for it."""

    spiffe_id: str
    key_pem: bytes
    chain_pem: tuple[str, ...]
    root_pem: str
    not_before: datetime
    not_after: datetime
    fetched_at: datetime

    def __repr__(self) -> str:  # never print the key
        return f"WorkloadCertificate({self.spiffe_id}, expires {self.not_after.isoformat()})"

    @property
    def renew_at(self) -> datetime:
        # Half of the life left when it arrived: not_before is backdated for clock skew, so it would
        # make a short-lived certificate due for renewal the moment it arrives.
        return self.fetched_at + (self.not_after - self.fetched_at) / 2


def new_csr(spiffe_id: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key (PKCS8 PEM) and a CSR carrying only the URI SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def unreachable(exc: BaseException) -> bool:
    """Whether a failed request never got an answer from control (refused, reset, timed out)."""
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return False  # control, or something in its place, answered with a certificate we do not take
    return isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | TimeoutError)


class IdentityManager:
    """Certificates by SPIFFE ID, fetched on demand and kept fresh by `run`."""

    def __init__(self, control_url: str, credential: NodeCredential, retry_max: float = 30.0) -> None:
        self.url = control_url.rstrip("/") + wire.CERTIFICATES_PATH
        self.credential = credential
        self.retry_max = retry_max
        self.certs: dict[str, WorkloadCertificate] = {}
        self.wanted: set[str] = set()
        self.errors: dict[str, str] = {}
        self._fetches: dict[str, asyncio.Task[WorkloadCertificate]] = {}
        self._changed = asyncio.Event()
        self._issued = asyncio.Event()
        """Set (and replaced by a fresh one) whenever a certificate is stored: wakes `wait_issued`."""

    def track(self, spiffe_ids: set[str]) -> None:
        """The identities that have enrolled pods on this node now; others are forgotten."""
        self.wanted = set(spiffe_ids)
        for gone in set(self.certs) - self.wanted:
            del self.certs[gone]
        self._changed.set()

    async def certificate(self, spiffe_id: str) -> WorkloadCertificate:
        """The current certificate of `spiffe_id`, fetching it first if there is none yet."""
        cert = self.certs.get(spiffe_id)
        if cert is not None and cert.not_after > datetime.now(UTC):
            return cert
        return await self._fetch(spiffe_id)

    async def wait_issued(self, spiffe_id: str, timeout: float) -> None:
        """Return once `spiffe_id` has a valid certificate, or after `timeout` seconds (whichever comes first)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._valid(spiffe_id):
                    await self._issued.wait()

    def _valid(self, spiffe_id: str) -> bool:
        cert = self.certs.get(spiffe_id)
        return cert is not None and cert.not_after > datetime.now(UTC)

    async def _fetch(self, spiffe_id: str) -> WorkloadCertificate:
        task = self._fetches.get(spiffe_id)
        if task is None:  # one request per identity, however many connections wait for it
            task = asyncio.create_task(self._request(spiffe_id), name=f"csr-{spiffe_id}")
            self._fetches[spiffe_id] = task
            task.add_done_callback(lambda _: self._fetches.pop(spiffe_id, None))
        # The request is shared: a waiter that is cancelled (its connection closed, a pod removed) must
        # stop waiting without cancelling the request for every other waiter, so each waits on a shield.
        return await asyncio.shield(task)

    async def _request(self, spiffe_id: str) -> WorkloadCertificate:
        key_pem, csr_pem = await asyncio.to_thread(new_csr, spiffe_id)  # key generation is CPU work
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(ssl=self.credential.client_context(), enable_cleanup_closed=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            # headers() reads the token file now: the kubelet rotates it, an old one may have expired
            async with session.post(
                self.url, json={"csr": csr_pem.decode()}, headers=self.credential.headers()
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    error = f"control refused {spiffe_id} ({resp.status}): {body.get('error', body)}"
                    self.errors[spiffe_id] = error
                    raise IdentityError(error)
        leaf = x509.load_pem_x509_certificate(body["certificateChain"][0].encode())
        cert = WorkloadCertificate(
            spiffe_id=spiffe_id,
            key_pem=key_pem,
            chain_pem=tuple(body["certificateChain"]),
            root_pem=body["rootCertificate"],
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            fetched_at=datetime.now(UTC),
        )
        self.certs[spiffe_id] = cert
        self.errors.pop(spiffe_id, None)
        issued, self._issued = self._issued, asyncio.Event()
        issued.set()
        log.info("certificate for %s until %s", spiffe_id, cert.not_after.isoformat())
        return cert

    async def run(self) -> None:
        """Keep every wanted identity's certificate fresh: fetch missing ones, renew at half life."""
        loop = asyncio.get_running_loop()
        retry: dict[str, Backoff] = {}
        retry_away: dict[str, Backoff] = {}
        # After a failure, the loop time of the identity's next try: each identity keeps its own schedule, so
        # many identities failing together (control away) do not make every pass retry all of them.
        next_try: dict[str, float] = {}
        away_max = min(AWAY_RETRY_MAX, self.retry_max)
        while True:
            now = datetime.now(UTC)
            needed = {i for i in self.wanted if i not in self.certs or self.certs[i].renew_at <= now}
            for settled in next_try.keys() - needed:  # no longer wanted, or served meanwhile by `certificate()`
                for schedule in (retry, retry_away, next_try):
                    schedule.pop(settled, None)
            for spiffe_id in sorted(i for i in needed if next_try.get(i, 0.0) <= loop.time()):
                try:
                    await self._fetch(spiffe_id)
                    for schedule in (retry, retry_away, next_try):
                        schedule.pop(spiffe_id, None)
                except (IdentityError, aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
                    first = spiffe_id not in next_try
                    # Nothing answered: control is away, and the next try should find it soon after it is back.
                    # An answer (a refusal, a broken reply, a TLS failure) will not change soon: up to retry_max.
                    if unreachable(exc):
                        backoff = retry_away.setdefault(spiffe_id, Backoff(away_max, away_max))
                    else:
                        backoff = retry.setdefault(spiffe_id, Backoff(away_max, self.retry_max))
                    next_try[spiffe_id] = loop.time() + backoff.next()
                    self.errors[spiffe_id] = str(exc)
                    if first:  # once per outage, not once a second
                        log.warning("certificate for %s: %s; retrying", spiffe_id, exc)
                    else:
                        log.debug("certificate for %s: %s; retrying", spiffe_id, exc)
            waits = [t - loop.time() for t in next_try.values()]
            waits += [
                (c.renew_at - datetime.now(UTC)).total_seconds()
                for i, c in self.certs.items()
                if i in self.wanted and i not in next_try
            ]
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.05, min(waits, default=60.0)))

    def status(self) -> list[dict[str, object]]:
        """For /config_dump: identity, expiry, and the last error (never the key)."""
        return [
            {
                "identity": i,
                "notAfter": self.certs[i].not_after.isoformat() if i in self.certs else None,
                "error": self.errors.get(i),
            }
            for i in sorted(self.wanted | set(self.certs))
        ]
