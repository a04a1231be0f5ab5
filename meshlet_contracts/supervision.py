"""Keeping long-lived tasks alive: one supervisor per process restarts any task that fails or ends.

A watcher that dies silently (a file source that hit one bad file, a ZDS client that met an exception it
did not expect) leaves a process that looks healthy and no longer does its job. Every long-lived task of
control, the agent and ztunnel therefore runs under a `Supervisor`: whatever ends it other than
cancellation is logged once with its traceback, the task is restarted after a backoff with jitter
(so a persistent fault costs a bounded amount of log and CPU), and while it is down the supervisor says so
(`down()`), which readiness and `meshlet status` report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from meshlet_contracts.backoff import Backoff

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class TaskState:
    """What a supervised task is doing, for status pages."""

    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    down_since: float | None = None
    """Wall-clock time the task last failed and is not yet running again (None while it runs)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "running": self.running,
            "restarts": self.restarts,
            "lastError": self.last_error,
            "downSince": self.down_since,
        }


class Supervisor:
    """Runs named task factories until `stop`; restarts each after a failure with backoff and jitter."""

    def __init__(self, backoff_initial: float = 0.2, backoff_max: float = 10.0, stable: float = 10.0) -> None:
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        """No wait between restarts is longer than this, however long the fault lasts."""
        self.stable = stable
        """A run that lasted this long resets the backoff."""
        self.states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def start(self, name: str, factory: TaskFactory) -> None:
        """Supervise `factory()` under `name`; must be called on the running loop."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"a task named {name!r} is supervised already")
        state = self.states[name] = TaskState(name, running=True)
        self._tasks[name] = asyncio.get_running_loop().create_task(self._keep(state, factory), name=name)

    def down(self) -> list[TaskState]:
        """The tasks that failed and wait to be restarted (not those cancelled on purpose)."""
        return [s for s in self.states.values() if s.down_since is not None]

    def status(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.states.values()]

    def begin_stop(self) -> None:
        """From now on a task that returns has finished and is not restarted: call this before asking tasks
        to end on their own (a client's `stop()`), so that their clean return is not taken for a failure."""
        self._stopping = True

    def cancel(self, name: str) -> None:
        """End one task for good (it is not restarted)."""
        task = self._tasks.get(name)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Cancel every task and wait for them to end."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _keep(self, state: TaskState, factory: TaskFactory) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        # Equal jitter: a restart never comes sooner than half the current wait.
        backoff = Backoff(self.backoff_initial, self.backoff_max, floor=0.5)
        try:
            while True:
                started = loop.time()
                state.running = True
                state.down_since = None
                try:
                    await factory()
                    if self._stopping or (me is not None and me.cancelling()):
                        return  # (cancelled from within, then returned: `cancel` asked for its end all the same)
                    error = "ended unexpectedly"
                    log.error("task %s ended; restarting it", state.name)
                except asyncio.CancelledError:
                    if me is not None and me.cancelling():
                        raise  # cancelled from outside: stop() or cancel()
                    # A CancelledError that nobody asked this task for (an inner future was cancelled) ends
                    # the task just as silently as any other error would: it is a failure too.
                    error = "CancelledError: cancelled from within"
                    log.error("task %s was cancelled from within; restarting it", state.name)
                except Exception as exc:  # any failure of a long-lived task is that task's, never the process's
                    error = f"{type(exc).__name__}: {exc}"
                    if error != state.last_error:
                        log.exception("task %s failed; restarting it", state.name)
                    else:  # the same fault again: its traceback is in the log already
                        log.error("task %s failed again (%s); restarting it", state.name, error)
                state.last_error = error
                state.running = False
                state.down_since = time.time()
                state.restarts += 1
                if loop.time() - started > self.stable:
                    backoff.reset()
                await backoff.sleep()
        finally:
            # Ended for good (cancelled, or returned while stopping): no longer running, and not "down".
            state.running = False
            state.down_since = None
