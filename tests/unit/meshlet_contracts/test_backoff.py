"""The shared retry schedule: waits double up to a bound, are jittered within it, and start over on reset."""

from __future__ import annotations

import asyncio
import random

import pytest

from meshlet_contracts.backoff import Backoff


def bounds(low: float, high: float) -> float:
    return high


def test_the_cap_doubles_per_failure_up_to_the_maximum() -> None:
    backoff = Backoff(0.1, 1.0, uniform=bounds)
    assert [backoff.next() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_reset_starts_over_from_the_initial_wait() -> None:
    backoff = Backoff(0.5, 10.0, uniform=bounds)
    for _ in range(4):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 0.5


@pytest.mark.parametrize(("floor", "low"), [(0.0, 0.0), (0.5, 2.0)])
def test_each_wait_is_drawn_between_the_floor_and_the_cap(floor: float, low: float) -> None:
    draws: list[tuple[float, float]] = []

    def record(a: float, b: float) -> float:
        draws.append((a, b))
        return a

    backoff = Backoff(4.0, 4.0, floor=floor, uniform=record)
    assert backoff.next() == low
    assert draws == [(low, 4.0)]


def test_real_draws_stay_within_bounds_and_spread() -> None:
    backoff = Backoff(8.0, 8.0, floor=0.25)
    waits = [backoff.next() for _ in range(200)]
    assert all(2.0 <= w <= 8.0 for w in waits)
    assert len(set(waits)) > 100  # jitter: retries of many nodes do not line up


def test_the_module_random_is_used_at_each_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    backoff = Backoff(1.0, 1.0)
    monkeypatch.setattr(random, "uniform", bounds)  # a patch after construction still applies
    assert backoff.next() == 1.0


@pytest.mark.parametrize(("initial", "maximum", "floor"), [(0.0, 1.0, 0.0), (1.0, -1.0, 0.0), (1.0, 2.0, 1.5)])
def test_nonsense_settings_are_refused(initial: float, maximum: float, floor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, floor=floor)


@pytest.mark.asyncio
async def test_sleep_ends_at_once_when_asked_to_stop() -> None:
    backoff = Backoff(60.0, 60.0, floor=1.0)
    stop = asyncio.Event()
    sleeping = asyncio.create_task(backoff.sleep(stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(sleeping, 5.0)  # not 60 s
    assert backoff.cap == 60.0


@pytest.mark.asyncio
async def test_sleep_waits_the_drawn_time() -> None:
    backoff = Backoff(0.05, 0.05, floor=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await backoff.sleep()
    assert loop.time() - started >= 0.04
