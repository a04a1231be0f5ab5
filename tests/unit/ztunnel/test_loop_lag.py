"""The event loop's lateness, as `meshlet_event_loop_lag_seconds` shows it: a loop held busy is seen late."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import until
from ztunnel.metrics import Metrics
from ztunnel.observe import loop_lag


def _buckets(metrics: Metrics) -> dict[str, float]:
    families = text_string_to_metric_families(metrics.render())
    [family] = [f for f in families if f.name == "meshlet_event_loop_lag_seconds"]
    return {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}


def test_an_idle_process_exports_an_empty_histogram() -> None:
    buckets = _buckets(Metrics())
    assert buckets["+Inf"] == 0 and buckets["0.002"] == 0


@pytest.mark.asyncio
async def test_a_callback_that_holds_the_loop_shows_as_one_late_tick() -> None:
    metrics = Metrics()
    watcher = asyncio.create_task(loop_lag.watch(metrics, interval=0.02))
    try:
        await until(lambda: sum(metrics.loop_lag.counts) >= 2, "two ticks", 5)
        ticks = sum(metrics.loop_lag.counts)
        time.sleep(0.08)  # a callback that blocks the loop for 80 ms (what a big config applied on the loop did)
        await until(lambda: sum(metrics.loop_lag.counts) > ticks, "the tick after the block", 5)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    buckets = _buckets(metrics)
    assert buckets["0.05"] < buckets["+Inf"]  # one tick came more than 50 ms late
    assert metrics.loop_lag.sum >= 0.05
