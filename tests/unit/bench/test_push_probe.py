"""The push probe's reading of ztunnel logs: when every ztunnel first held the pushed workloads."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tests.bench import push_probe


def _line(at: float, version: int, workloads: int) -> str:
    stamp = datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    return f"{stamp} INFO ztunnel: config version {version}: {workloads} workloads, 2 services\n"


def test_the_push_counts_from_the_write_to_the_first_version_holding_everything_at_each_ztunnel(tmp_path: Path) -> None:
    t0 = 1_800_000_000.0
    node1, node2 = tmp_path / "ztunnel-node1.log", tmp_path / "ztunnel-node2.log"
    node1.write_text(_line(t0 - 5, 1, 4) + _line(t0 + 1.5, 2, 5000) + _line(t0 + 2.25, 3, 10004))
    node2.write_text(_line(t0 - 5, 1, 4) + _line(t0 + 3.0, 2, 10004) + _line(t0 + 4.0, 3, 10004))
    assert push_probe._holding([node1, node2], 10004, t0) == {"node1": 2.25, "node2": 3.0}
    assert push_probe._latest_count(node2) == 10004


def test_the_push_is_not_done_while_one_ztunnel_has_not_applied_it(tmp_path: Path) -> None:
    t0 = 1_800_000_000.0
    node1, node2 = tmp_path / "ztunnel-node1.log", tmp_path / "ztunnel-node2.log"
    node1.write_text(_line(t0 + 1, 2, 10004))
    node2.write_text(_line(t0 + 1, 2, 4000) + "a line that is not a version\n")
    assert push_probe._holding([node1, node2], 10004, t0) is None
    # a version from before the write does not count, whatever it held
    node2.write_text(_line(t0 - 1, 7, 10004))
    assert push_probe._holding([node1, node2], 10004, t0) is None


def test_the_loop_lag_of_the_window_is_the_difference_of_two_scrapes() -> None:
    inf = float("inf")
    before = {0.002: 10.0, 0.01: 10.0, 0.05: 10.0, 0.1: 10.0, inf: 10.0}
    after = {0.002: 100.0, 0.01: 110.0, 0.05: 115.0, 0.1: 118.0, inf: 120.0}
    assert push_probe.lag_summary(before, after) == {
        "ticks": 110, "over10ms": 10, "over50ms": 5, "worstAtMostSeconds": inf,
    }  # fmt: skip
    quiet = push_probe.lag_summary(after, after)
    assert quiet == {"ticks": 0, "over10ms": 0, "over50ms": 0, "worstAtMostSeconds": None}
