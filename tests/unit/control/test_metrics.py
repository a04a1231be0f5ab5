"""Control's /metrics text passes Prometheus' own lint (`promtool check metrics`), every family with samples."""

from __future__ import annotations

from prometheus_client import generate_latest

from control.metrics import ControlMetrics
from tests.promtool import promtool_check_metrics


def test_promtool_finds_nothing_to_flag() -> None:
    metrics = ControlMetrics()
    metrics.connected_proxies.set(2)
    metrics.pushes.labels("snapshot").inc()
    metrics.acks.inc()
    metrics.rejects.labels("node1").inc()
    metrics.slow_disconnects.inc()
    metrics.certs_issued.inc()
    metrics.certs_refused.labels("not_ready").inc()
    metrics.config_version.set(7)
    metrics.config_errors.set(1)
    metrics.objects.labels("services").set(3)

    assert promtool_check_metrics(generate_latest(metrics.registry).decode()) == ""
