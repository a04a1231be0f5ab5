"""Keeps control's warnings (control/model/advice.py) current: logged once each, counted, served on /debug/status.

The warnings are a pass over every object, so they are worked out in a worker thread, and not per version: after a
change to the store's objects (a new version or not: a Namespace's labels alone make none) the advisor waits
`SETTLE` seconds (a push of thousands of pods is many versions) and works them out once. `/debug/status` asks
`current()`, which works them out at once when the objects have changed since, so what an operator reads is never
behind the store.
"""

from __future__ import annotations

import asyncio
import logging

from control.metrics import ControlMetrics
from control.model.advice import MeshWarning, mesh_warnings
from control.model.mesh import MeshSettings
from control.store import ConfigStore

log = logging.getLogger(__name__)
SETTLE = 1.0
"""Seconds after a change before the warnings are worked out again (later changes in that time join it)."""


class Advisor:
    def __init__(self, store: ConfigStore, settings: MeshSettings, metrics: ControlMetrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._changed = asyncio.Event()
        self._warnings: list[MeshWarning] = []
        self._version: int | None = None
        """The store revision `_warnings` were worked out for (None: never)."""
        self._lock = asyncio.Lock()
        store.subscribe(self._changed.set, objects=True)

    async def current(self) -> list[MeshWarning]:
        """The warnings for the store as it is now."""
        async with self._lock:  # one pass at a time: a burst of status requests shares it
            version = self.store.revision
            if version != self._version:
                objects = list(self.store.objects.values())  # frozen objects: the thread reads a fixed list
                found = await asyncio.to_thread(mesh_warnings, objects, self.settings)
                self._publish(found, version)
            return self._warnings

    def _publish(self, found: list[MeshWarning], version: int) -> None:
        before = {str(w) for w in self._warnings}
        for warning in found:
            if str(warning) not in before:  # once each, for as long as it stands
                log.warning("%s", warning)
        self._warnings, self._version = found, version
        self.metrics.config_warnings.set(len(found))

    async def run(self) -> None:
        """Work the warnings out after each settled change; runs until cancelled."""
        while True:
            self._changed.clear()  # first: a change made while the pass below runs wakes the next one
            await self.current()
            await self._changed.wait()
            await asyncio.sleep(SETTLE)
