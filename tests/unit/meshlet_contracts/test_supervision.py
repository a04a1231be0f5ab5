"""The supervisor keeps a long-lived task alive: a failure is restarted after a bounded backoff and shows as
down meanwhile; cancellation (stop, cancel) ends a task for good."""

from __future__ import annotations

import asyncio
import random

import pytest

from meshlet_contracts import supervision
from meshlet_contracts.supervision import Supervisor
from tests.conftest import until

pytestmark = pytest.mark.asyncio


async def test_a_task_that_raises_shows_as_down_then_is_restarted() -> None:
    sup = Supervisor(backoff_initial=0.2)
    calls = 0
    forever = asyncio.Event()

    async def watcher() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RecursionError("maximum recursion depth exceeded")
        await forever.wait()

    sup.start("file-source", watcher)
    try:
        await until(lambda: bool(sup.down()), "the failed task to show as down")
        [state] = sup.down()
        assert state.name == "file-source" and not state.running and state.restarts == 1
        assert state.last_error == "RecursionError: maximum recursion depth exceeded"
        assert sup.status()[0]["lastError"] == state.last_error and sup.status()[0]["downSince"] is not None
        await until(lambda: calls == 2 and not sup.down(), "the restart")
        assert sup.states["file-source"].running
    finally:
        await sup.stop()


async def test_stop_cancels_the_task_and_nothing_is_restarted() -> None:
    sup = Supervisor(backoff_initial=0.01)
    calls = 0
    cancelled = asyncio.Event()

    async def watcher() -> None:
        nonlocal calls
        calls += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    sup.start("store", watcher)
    await until(lambda: calls == 1, "the task to run")
    await sup.stop()
    assert cancelled.is_set()
    await asyncio.sleep(0.05)  # several backoff periods: a restart would have come by now
    assert calls == 1 and not sup.down() and not sup.states["store"].running


async def test_cancel_ends_one_task_and_leaves_the_others() -> None:
    sup = Supervisor(backoff_initial=0.01)
    running: set[str] = set()

    def forever(name: str) -> supervision.TaskFactory:
        async def run() -> None:
            running.add(name)
            try:
                await asyncio.Event().wait()
            finally:
                running.discard(name)

        return run

    sup.start("zds", forever("zds"))
    sup.start("config", forever("config"))
    try:
        await until(lambda: running == {"zds", "config"}, "both tasks to run")
        sup.cancel("zds")
        await until(lambda: running == {"config"}, "zds to end")
        await asyncio.sleep(0.05)
        assert running == {"config"} and not sup.down()
    finally:
        await sup.stop()


async def test_backoff_doubles_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    def longest(low: float, high: float) -> float:
        waits.append(high)
        return high

    monkeypatch.setattr(random, "uniform", longest)
    sup = Supervisor(backoff_initial=0.001, backoff_max=0.004)
    calls = 0

    async def always_fails() -> None:
        nonlocal calls
        calls += 1
        raise OSError("no such directory")

    sup.start("store", always_fails)
    try:
        await until(lambda: calls >= 6, "six attempts")
    finally:
        await sup.stop()
    assert waits[:5] == [0.001, 0.002, 0.004, 0.004, 0.004]
    assert sup.states["store"].restarts >= 5


async def test_a_task_that_returns_or_is_cancelled_from_within_is_restarted_unless_stopping() -> None:
    sup = Supervisor(backoff_initial=0.01)
    calls = 0

    async def quits() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return  # a loop that ended on its own: the process would be deaf from now on
        if calls == 2:
            inner = asyncio.get_running_loop().create_future()
            inner.cancel()
            await inner  # a CancelledError nobody asked this task for
        await asyncio.Event().wait()

    sup.start("zds", quits)
    try:
        await until(lambda: calls == 3, "two restarts")
        assert sup.states["zds"].restarts == 2
        assert sup.states["zds"].last_error == "CancelledError: cancelled from within"
    finally:
        await sup.stop()

    finished = 0

    async def ends_when_asked() -> None:
        nonlocal finished
        finished += 1

    sup = Supervisor(backoff_initial=0.01)
    sup.begin_stop()
    sup.start("config", ends_when_asked)
    await asyncio.sleep(0.05)
    assert finished == 1 and not sup.down() and sup.states["config"].restarts == 0
    await sup.stop()
