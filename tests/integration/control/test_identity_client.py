"""ztunnel's identity manager against a real control: certificates for this node's pods, one request
per identity however many callers, control's refusals surfaced, renewal at half life."""

from __future__ import annotations

import asyncio

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
