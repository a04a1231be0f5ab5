"""The identity manager's sharing of one certificate request among its waiters, with control faked
(the request itself is replaced: what is under test is who waits on it and what cancelling one does)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ztunnel.config.client import NodeCredential
from ztunnel.identity.manager import IdentityManager, WorkloadCertificate

pytestmark = pytest.mark.asyncio
WEB = "spiffe://cluster.local/ns/mesh/sa/web"


class FakeControl:
    """Stands in for the CSR round trip: each request waits until the test lets control answer."""

    def __init__(self) -> None:
        self.requests = 0
        self.answer = asyncio.Event()

    async def request(self, spiffe_id: str) -> WorkloadCertificate:
        self.requests += 1
        await self.answer.wait()
        now = datetime.now(UTC)
        return WorkloadCertificate(spiffe_id, b"key", ("chain",), "root", now, now + timedelta(hours=1), now)


async def test_a_cancelled_waiter_does_not_cancel_the_shared_request_for_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = IdentityManager("https://control.invalid:15012", NodeCredential.in_dir(tmp_path))
    control = FakeControl()
    monkeypatch.setattr(manager, "_request", control.request)
    leaving = asyncio.create_task(manager.certificate(WEB))  # e.g. a connection that closed while waiting
    staying = asyncio.create_task(manager.certificate(WEB))
    async with asyncio.timeout(5):
        while control.requests == 0:
            await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    control.answer.set()
    async with asyncio.timeout(5):
        cert = await staying
    assert cert.spiffe_id == WEB
    assert control.requests == 1  # both waited on one request
    assert leaving.cancelled()
