"""ztunnel's identity manager against a real control: certificates for this node's pods, one request
per identity however many callers, control's refusals surfaced, renewal at half life."""

from __future__ import annotations

import asyncio
import signal

import pytest
from cryptography import x509

from tests.integration.control.conftest import TD, ControlProcess
from ztunnel.config.client import NodeCredential
from ztunnel.identity.manager import IdentityError, IdentityManager

pytestmark = pytest.mark.asyncio
WEB = f"spiffe://{TD}/ns/mesh/sa/web"


@pytest.fixture
def control_args() -> tuple[str, ...]:
    return ("--cert-ttl", "4s")  # short enough to watch a renewal happen


def manager(control: ControlProcess) -> IdentityManager:
    return IdentityManager(control.url, NodeCredential.in_dir(control.node_dir("node1")), retry_max=1.0)


async def test_concurrent_callers_share_one_certificate_request(control: ControlProcess) -> None:
    m = manager(control)
    certs = await asyncio.gather(*(m.certificate(WEB) for _ in range(10)))
    assert len({id(c) for c in certs}) == 1
    leaf = x509.load_pem_x509_certificate(certs[0].chain_pem[0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert control.metric("meshlet_control_certificates_issued_total") == 1
    assert "PRIVATE KEY" not in repr(certs[0])


async def test_refusal_carries_controls_reason(control: ControlProcess) -> None:
    with pytest.raises(IdentityError, match="no running pod with service account mesh/api is scheduled on node node1"):
        await manager(control).certificate(f"spiffe://{TD}/ns/mesh/sa/api")


async def test_tracked_identity_is_renewed_at_half_life(control: ControlProcess) -> None:
    m = manager(control)
    m.track({WEB})
    task = asyncio.create_task(m.run())
    try:
        async with asyncio.timeout(10):
            while WEB not in m.certs:
                await asyncio.sleep(0.05)
            first = m.certs[WEB]
            while m.certs[WEB] is first:
                await asyncio.sleep(0.05)
        renewed = m.certs[WEB]
        assert renewed.fetched_at >= first.renew_at  # at half life, not before
        assert renewed.not_after > first.not_after  # and before the old one expired:
        assert renewed.fetched_at < first.not_after
        assert m.status() == [{"identity": WEB, "notAfter": renewed.not_after.isoformat(), "error": None}]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_identity_wanted_while_control_is_away_gets_its_certificate_soon_after_control_returns(
    control: ControlProcess,
) -> None:
    m = IdentityManager(control.url, NodeCredential.in_dir(control.node_dir("node1")))  # the default retry_max
    control.kill(signal.SIGTERM)
    m.track({WEB})  # a pod that starts during the outage
    task = asyncio.create_task(m.run())
    try:
        await asyncio.sleep(3.0)  # the outage: long enough for several failed tries
        assert WEB not in m.certs and m.errors[WEB]
        await asyncio.to_thread(control.start)  # returns once control answers /ready
        back = asyncio.get_running_loop().time()
        await m.wait_issued(WEB, 5.0)  # what a pod's 15008 listener waits on
        # Tries are at most a second apart while nothing answers: the certificate comes within about that.
        assert WEB in m.certs and asyncio.get_running_loop().time() - back < 2.0
        assert control.metric("meshlet_control_certificates_issued_total") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
