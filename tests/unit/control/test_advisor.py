"""The advisor: warnings worked out for the store as it is, each logged once, counted in a gauge."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from control.advisor import Advisor
from control.metrics import ControlMetrics
from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.store import ConfigStore

pytestmark = pytest.mark.asyncio


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


async def test_warnings_follow_the_store_and_each_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ControlMetrics()
    store = ConfigStore(MeshSettings(), metrics)
    advisor = Advisor(store, store.settings, metrics)
    store.apply([SourceBatch("a.yaml", (namespace("legacy", **{"istio.io/dataplane-mode": "ambient"}),))])
    with caplog.at_level(logging.WARNING, logger="control.advisor"):
        [warning] = await advisor.current()
        assert warning.code == "istio-label-ignored" and warning.object == "Namespace legacy"
        store.apply([SourceBatch("b.yaml", (namespace("other"),))])  # a new version, the same warning
        assert len(await advisor.current()) == 1
    assert [r.getMessage() for r in caplog.records].count(str(warning)) == 1
    assert metrics.config_warnings._value.get() == 1
    store.apply([SourceBatch("a.yaml", (namespace("legacy", **{"meshlet.io/dataplane-mode": "ambient"}),))])
    assert await advisor.current() == []
    assert metrics.config_warnings._value.get() == 0
