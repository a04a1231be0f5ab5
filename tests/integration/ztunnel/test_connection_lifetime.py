"""How long ztunnel keeps a 15008 connection: it is freed as it closes, by reference counting (issue #12, item 5).

A real `PodServing` serves one pod whose listeners are loopback sockets (no netns), with certificates from
a test CA, on uvloop as ztunnel runs. With the cyclic garbage collector off, the server side of every
short mTLS connection must be gone as soon as the client closed it: nothing (a timer, a reference cycle)
may keep it and its TLS and HTTP/2 state. Before the fix each one stayed referenced by the handshake
check's timer for 5.5 s, then by reference cycles until a full collection that hardly ever ran: ~44 KB a
connection that a node under churn never got back. A failed handshake is still counted, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, cast

import pytest
import uvloop

from control.ca import CertificateAuthority
from meshlet_contracts.zds import WorkloadInfo
from tests.integration.ztunnel.loopback import CLIENT_ID, LOOPBACK, SERVER_ID, TD, wait_until, workload_certificate
from ztunnel.identity.manager import IdentityManager, WorkloadCertificate
from ztunnel.inpod.listeners import PodListeners
from ztunnel.proxy import serving
from ztunnel.proxy.context import ProxyContext, ServedPod
from ztunnel.proxy.inbound import InboundHbone
from ztunnel.tls import TlsContexts

CLIENTS = 50
FREED_TIMEOUT = 2.0
"""Seconds a closed connection may take to be freed: the loop's few turns to see the close."""
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")  # + an empty SETTINGS
POD = WorkloadInfo("server", "b", "server", (LOOPBACK,))  # SERVER_ID's namespace and service account
Refs = list["weakref.ref[InboundHbone]"]


class _Identities:
    """What `PodServing` asks of the identity manager: the pod's certificate, and which ones to keep."""

    def __init__(self, cert: WorkloadCertificate) -> None:
        self.cert = cert
        self.certs = {cert.spiffe_id: cert}

    async def certificate(self, spiffe_id: str) -> WorkloadCertificate:
        assert spiffe_id == self.cert.spiffe_id, spiffe_id
        return self.cert

    def track(self, spiffe_ids: set[str]) -> None:
        pass


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("mesh-ca"), TD)


@pytest.fixture
def accepted(monkeypatch: pytest.MonkeyPatch) -> Refs:
    """Weak references to every connection `PodServing` accepts on 15008 from now on."""
    refs: Refs = []

    class Recorded(InboundHbone):
        def __init__(self, ctx: ProxyContext, pod: ServedPod) -> None:
            super().__init__(ctx, pod)
            refs.append(weakref.ref(self))

    monkeypatch.setattr(serving, "InboundHbone", Recorded)
    return refs


@contextlib.asynccontextmanager
async def served_pod(ca: CertificateAuthority) -> AsyncIterator[tuple[ProxyContext, int]]:
    """ztunnel's serving of one pod on loopback; yields the context and the pod's 15008 port."""
    identities = cast(IdentityManager, _Identities(workload_certificate(ca, SERVER_ID)))
    ctx = ProxyContext("node1", TD, identities=identities)
    sockets = {name: socket.create_server((LOOPBACK, 0)) for name in ("outbound", "inbound_plaintext", "hbone")}
    listeners = PodListeners(-1, sockets)
    pods = serving.PodServing(ctx)
    try:
        pods.pod_added("uid-1", POD, listeners)
        await wait_until(lambda: ctx.pods["uid-1"].hbone_ready, "15008 to be served")
        yield ctx, sockets["hbone"].getsockname()[1]
    finally:
        pods.pod_removed("uid-1")
        for task in list(ctx.tasks):
            task.cancel()
        listeners.close()


async def short_connection(port: int, context: ssl.SSLContext) -> bytes:
    """Connect, handshake, send the HTTP/2 preface, read ztunnel's first bytes (its SETTINGS), close."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=context)
    try:
        writer.write(PREFACE)
        return await asyncio.wait_for(reader.read(64), 5)
    except (OSError, ssl.SSLError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def all_freed(refs: Refs, what: str, timeout: float = FREED_TIMEOUT) -> None:
    try:
        await wait_until(lambda: all(ref() is None for ref in refs), what, timeout)
    except AssertionError as exc:
        held = sum(ref() is not None for ref in refs)
        raise AssertionError(f"{exc}: {held} of {len(refs)} are still referenced") from None


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(scenario())  # the event loop ztunnel runs on: its TLS transport is uvloop's own


def test_a_closed_hbone_connection_is_freed_at_once(
    ca: CertificateAuthority, accepted: Refs, no_cyclic_gc: None
) -> None:
    client = TlsContexts().client(workload_certificate(ca, CLIENT_ID))

    async def scenario() -> None:
        async with served_pod(ca) as (_, port):
            answers = await asyncio.gather(*(short_connection(port, client) for _ in range(CLIENTS)))
            assert all(answers), f"{answers.count(b'')} of {CLIENTS} connections were not accepted"
            assert len(accepted) == CLIENTS
            await all_freed(accepted, f"the {CLIENTS} closed connections to be freed")

    run(scenario)


def test_a_failed_handshake_is_counted_once_and_freed(
    ca: CertificateAuthority, accepted: Refs, no_cyclic_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "HANDSHAKE_TIMEOUT", 0.3)
    good = TlsContexts().client(workload_certificate(ca, CLIENT_ID))
    no_certificate = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # what ztunnel requires is missing
    no_certificate.minimum_version = ssl.TLSVersion.TLSv1_3
    no_certificate.check_hostname = False
    no_certificate.load_verify_locations(cadata=ca.root_pem)
    no_certificate.set_alpn_protocols(["h2"])

    async def scenario() -> None:
        async with served_pod(ca) as (ctx, port):
            failed = ctx.metrics.errors
            assert await short_connection(port, good)
            assert not await short_connection(port, no_certificate)
            # The good connection's check would have fired first: counted once means counted right.
            await wait_until(lambda: failed[("inbound", "tls_handshake")] >= 1, "the failed handshake to be counted")
            assert failed[("inbound", "tls_handshake")] == 1
            await all_freed(accepted, "both connections to be freed")

    run(scenario)
