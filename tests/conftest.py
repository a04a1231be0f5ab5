"""Helpers shared by every test layer."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # the condition may raise until it holds (connection refused, ...)
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")
        time.sleep(interval)


async def until(condition: Callable[[], object], what: str, timeout: float = 5.0, interval: float = 0.005) -> None:
    """`wait_for` for tests running on an event loop: yields to the loop between polls."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, message: str) -> None:
    """Make the coroutine method `owner.name` raise RuntimeError(message) on its first call only, then run
    as before: a long-lived task that breaks once, for tests of its supervision."""
    real = getattr(owner, name)
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(message)
        await real(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees: what the cyclic collector would free later is what the test finds
    (a connection kept alive by a reference cycle)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
