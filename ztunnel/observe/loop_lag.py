"""How late the event loop runs what is due: the data path's responsiveness, as a histogram.

Every request ztunnel relays waits for its turn of the one event loop. A turn comes late when the loop is busy
(a callback that runs long, a big config version applied on the loop) or when the process waits for a CPU
(other processes on the node's cores) or for the GIL (a worker thread converting a config snapshot). A timer
due every `INTERVAL` measures that lateness, whatever the cause, into `meshlet_event_loop_lag_seconds`: the
bench's push probe reads it to tell a slow ztunnel from a busy machine. One timer per 100 ms costs nothing
measurable.
"""

from __future__ import annotations

import asyncio

from ztunnel.metrics import Metrics

INTERVAL = 0.1


async def watch(metrics: Metrics, interval: float = INTERVAL) -> None:
    """Observe each tick's lateness until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        metrics.loop_lagged(max(0.0, loop.time() - due))
