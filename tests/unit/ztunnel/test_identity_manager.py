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


async def test_while_control_is_away_each_identity_is_tried_about_once_a_second_renewals_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = IdentityManager("https://control.invalid:15012", NodeCredential.in_dir(tmp_path))
    tries: dict[str, int] = {}

    async def refused(spiffe_id: str) -> WorkloadCertificate:
        tries[spiffe_id] = tries.get(spiffe_id, 0) + 1
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(manager, "_request", refused)
    monkeypatch.setattr("random.uniform", lambda low, high: high)  # every wait at its cap: countable tries
    now = datetime.now(UTC)
    due = f"{WEB}-due"  # holds a valid certificate past half life: a renewal that control is not there for
    manager.certs[due] = WorkloadCertificate(
        due, b"k", ("c",), "r", now, now + timedelta(hours=1), now - timedelta(hours=2)
    )
    manager.track({due, *(f"{WEB}-{i}" for i in range(5))})
    task = asyncio.create_task(manager.run())
    try:
        await asyncio.sleep(2.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Tries at 0, 1 and 2 s: each identity on its own schedule, at most a second apart, and none spinning.
    assert set(tries.values()) == {3}, tries
    assert manager.certs[due].spiffe_id == due  # the current certificate keeps serving meanwhile
