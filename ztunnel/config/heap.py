"""Keeping the garbage collector's passes off the config: no 10-40 ms pauses of the data path per big push.

CPython's cyclic collector runs a full pass (every tracked object) once the objects that survived two younger
passes grow by a quarter. Converting a 10,000-workload snapshot creates a few hundred thousand such objects,
so a push triggered one or two full passes of 10-35 ms each (measured with `gc.callbacks` in the lab), which
hold the GIL: the event loop, and every request on it, waits. They found nothing to collect: the config index
is plain data, freed by reference counting when the next version replaces it.

So a big conversion (a message converted off the loop) runs with the collector off (off for the whole
process, for about as long as the worker thread converts), and before it is turned on again the heap is moved
into the permanent generation (`gc.freeze`, a list splice: no pass), where later passes do not look. (Turned
on with the new objects still young, the next young pass alone scanned them all: 30-40 ms.) Small deltas
change little and are left to the collector. What a freeze catches besides the index (cyclic garbage that
happened to be waiting) is reclaimed by letting everything back (`gc.unfreeze`) every `UNFREEZE_EVERY`
freezes or `UNFREEZE_AFTER` seconds, at the cost of one full pass some time after.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator

UNFREEZE_EVERY = 50
"""Freezes (big versions) between two unfreezes."""
UNFREEZE_AFTER = 3600.0
"""Seconds between two unfreezes at most."""


class Freezer:
    """Pauses the collector around big conversions and freezes what they made; unfreezes now and then."""

    def __init__(self, every: int = UNFREEZE_EVERY, after: float = UNFREEZE_AFTER) -> None:
        self.every = every
        self.after = after
        self.freezes = 0
        """Since the last unfreeze."""
        self.unfreezes = 0
        self._since = time.monotonic()

    @contextlib.contextmanager
    def converting(self) -> Iterator[None]:
        """No collector passes while the block runs; what it made is frozen before the collector is back."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            gc.freeze()
            self.freezes += 1
            if self.freezes >= self.every or time.monotonic() - self._since >= self.after:
                gc.unfreeze()  # all of it back in the oldest generation: one full pass reclaims frozen cycles
                self.freezes, self._since = 0, time.monotonic()
                self.unfreezes += 1
            if was_enabled:
                gc.enable()
