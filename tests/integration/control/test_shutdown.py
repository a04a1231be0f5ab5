"""Stopping control: SIGTERM with a proxy's config stream open ends the process within a couple of seconds, stops
the pushes first, and tells the proxy it is going away (so the proxy looks for the next control at once)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import pytest

from tests.conftest import until
from tests.integration.control.conftest import ControlProcess
from tests.integration.ztunnel.process import figure
from ztunnel.config.client import ConfigClient, NodeCredential

pytestmark = pytest.mark.asyncio
EXIT_BOUND = 5.0
"""Seconds control may take to exit: a correctness bound for a loaded CI machine (the goal, and the usual
figure on an idle one, is well under 2 s; the time is recorded as the test's `control_sigterm_to_exit`)."""


async def test_sigterm_with_a_connected_stream_exits_promptly_and_stops_pushing_first(
    control: ControlProcess,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.INFO, logger="ztunnel.config.client")
    client = ConfigClient(control.url, NodeCredential.in_dir(control.node_dir("node1")))
    task = asyncio.create_task(client.run())
    try:
        await until(lambda: client.state.version > 0, "the first snapshot", timeout=10)
        await until(lambda: control.status()["proxies"], "control to list the proxy", timeout=5)
        held = client.state
        assert control.proc is not None
        started = time.monotonic()
        control.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(control.proc.wait, EXIT_BOUND)  # TimeoutExpired fails the test
        elapsed = time.monotonic() - started
        control.proc = None
        figure(request, "control_sigterm_to_exit", elapsed)
        assert code == 0
        log = control.log()
        stopping = log.index("control: stopping")
        assert log.index("stopped pushing config; closing 1 config streams") > stopping
        assert "control: stopped in" in log[stopping:]
        await until(lambda: not client.connected, "the proxy to see the stream end", timeout=2)
        assert "config stream closed by control (stopping)" in caplog.text  # 1001, not a broken connection
        assert client.state is held  # the proxy keeps its last good config through the outage
    finally:
        await client.stop()
        await asyncio.wait_for(task, 10)
