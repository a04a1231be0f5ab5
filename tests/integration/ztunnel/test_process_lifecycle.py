"""A real ztunnel process against a real control on loopback: ready soon after it starts, and through a control
outage it keeps its config and takes a change made meanwhile soon after control is back.

The bounds asserted are correctness bounds for a loaded CI machine; the goals (ready within 1 s of start, a change
within 1 s of control's return) are what the figures recorded with `figure` show on an idle one.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.control.conftest import ControlProcess, namespace, pod
from tests.integration.ztunnel.process import ScriptedAgent, ZtunnelProcess, figure

READY_BOUND = 5.0
APPLY_BOUND = 3.0
"""Seconds from control's return (its /ready) to the change in ztunnel's config: the old reconnect backoff
(up to 10 s between tries) fails this after an outage of a few seconds."""
OUTAGE = 6.0
"""How long control stays away: long enough for the reconnect waits to reach their cap."""


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlProcess]:
    c = ControlProcess(tmp_path)
    c.store.mkdir()
    c.write("cluster.yaml", namespace("mesh", ambient=True), pod("web-1a", "mesh", "node1", "10.1.0.2"))
    c.provision("node1")
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None:
            c.kill(signal.SIGTERM)


@pytest.fixture
def ztunnel(tmp_path: Path, control: ControlProcess) -> Iterator[ZtunnelProcess]:
    """Not started: each test times its own start. Without a config cache, so config comes from control only."""
    agent = ScriptedAgent(tmp_path / "zds.sock")
    zt = ZtunnelProcess(
        tmp_path, "node1", control.url, control.node_dir("node1"), agent.path, extra_args=("--config-cache", "")
    )
    try:
        yield zt
    finally:
        if zt.proc is not None:
            zt.stop()
        agent.close()


def logged_at(log: str, pattern: str) -> list[float]:
    """The times (epoch seconds) of the log lines matching `pattern`, by the logs' asctime (one clock)."""
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + pattern, log, re.MULTILINE)
    return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in stamps]


def workload_names(zt: ZtunnelProcess) -> set[str]:
    return {w["name"] for w in zt.config_dump()["workloads"]}


def test_ztunnel_is_ready_with_controls_config_soon_after_it_starts(
    control: ControlProcess, ztunnel: ZtunnelProcess, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    ztunnel.start()
    wait_for(ztunnel.ready, READY_BOUND, "ztunnel ready", interval=0.005)
    figure(request, "ztunnel_start_to_ready", time.monotonic() - started)
    dump = ztunnel.config_dump()
    assert dump["config"]["source"] == "control" and dump["config"]["version"] == control.status()["version"]
    assert "web-1a" in workload_names(ztunnel)


def test_a_change_made_while_control_was_away_is_applied_soon_after_it_returns(
    control: ControlProcess, ztunnel: ZtunnelProcess, request: pytest.FixtureRequest
) -> None:
    ztunnel.start()
    wait_for(lambda: ztunnel.ready() and ztunnel.config_dump()["config"]["connected"], READY_BOUND, "ztunnel ready")
    control.kill(signal.SIGTERM)
    control.write("late.yaml", pod("web-late", "mesh", "node1", "10.1.0.9"))
    wait_for(lambda: not ztunnel.config_dump()["config"]["connected"], 5, "ztunnel to see control go")
    time.sleep(OUTAGE)  # the outage itself: the reconnect waits grow meanwhile
    assert ztunnel.ready() and workload_names(ztunnel) == {"web-1a"}  # the last good config serves meanwhile
    control.start()  # returns once control answers /ready
    back = time.monotonic()
    wait_for(lambda: "web-late" in workload_names(ztunnel), APPLY_BOUND, "the change made during the outage")
    figure(request, "control_ready_to_change_applied", time.monotonic() - back)
    # From control's nodes listener opening to ztunnel applying the snapshot, by the two logs' timestamps.
    [_, returned] = logged_at(control.log(), "control serving nodes")
    [applied] = logged_at(ztunnel.log(), r"config version \d+: 2 workloads")
    figure(request, "control_listening_to_change_applied", applied - returned)
    assert ztunnel.config_dump()["config"]["connected"]
