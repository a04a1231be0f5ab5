"""Exponential backoff with jitter: the one retry schedule every reconnecting loop of meshlet uses.

The config client, the ZDS client, the identity manager and the task supervisor all retry something that
failed; each waits a random time below a cap that doubles per failure up to a maximum, and starts over once
a try has lasted (or succeeded). Jitter spreads the retries of many nodes after a shared fault (a restarted
control), so they do not arrive at once. `floor` keeps part of each wait fixed: 0 is "full jitter"
(uniform in [0, cap]), 0.5 is "equal jitter" (uniform in [cap/2, cap]).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable


class Backoff:
    """The waits of one retry loop: `next()` after each failure, `reset()` after a success."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        floor: float = 0.0,
        uniform: Callable[[float, float], float] | None = None,
    ) -> None:
        if initial <= 0 or maximum <= 0:
            raise ValueError(f"backoff needs positive waits, got {initial} and {maximum}")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"backoff floor is a fraction of the cap, got {floor}")
        self.initial = initial
        self.maximum = maximum
        """No wait is longer than this, however long the fault lasts."""
        self.floor = floor
        self.cap = initial
        """The bound of the next wait."""
        self._uniform = uniform
        """The random draw (tests pass their own); None is `random.uniform`, looked up at each draw."""

    def next(self) -> float:
        """The seconds to wait now; the next wait's cap doubles (up to `maximum`)."""
        draw = self._uniform or random.uniform
        wait = draw(self.cap * self.floor, self.cap)
        self.cap = min(self.cap * 2, self.maximum)
        return wait

    def reset(self) -> None:
        """Start over from `initial` (a try succeeded, or lasted long enough to count as healthy)."""
        self.cap = self.initial

    async def sleep(self, stop: asyncio.Event | None = None) -> None:
        """Wait `next()` seconds, or less if `stop` is set meanwhile (a loop that is asked to end ends now)."""
        wait = self.next()
        if stop is None:
            await asyncio.sleep(wait)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
