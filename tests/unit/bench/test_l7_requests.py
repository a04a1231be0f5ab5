"""Which path served a scenario: the ztunnels' `istio_requests_total` by reporter, and its change over a run."""

from __future__ import annotations

from tests.bench.lab import requests_by_reporter
from tests.bench.scenario import l7_delta

METRICS = """\
# HELP istio_requests_total Requests served.
# TYPE istio_requests_total counter
istio_requests_total{reporter="source",response_code="200",destination_workload="web"} 10.0
istio_requests_total{reporter="source",response_code="404",destination_workload="web"} 2.0
istio_requests_total{reporter="destination",response_code="200",destination_workload="web"} 7.0
# HELP istio_tcp_connections_opened_total Connections opened.
# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{reporter="source"} 99.0
"""


def test_requests_are_summed_per_reporter_and_other_metrics_ignored() -> None:
    assert requests_by_reporter(METRICS) == {"source": 12.0, "destination": 7.0}


def test_an_l4_only_ztunnel_counts_no_requests() -> None:
    assert requests_by_reporter("# TYPE istio_tcp_connections_opened_total counter\n") == {}


def test_delta_per_node_and_reporter_counts_a_reporter_first_seen_after() -> None:
    before = {"node1": {"source": 5.0}, "node2": {}}
    after = {"node1": {"source": 105.0}, "node2": {"destination": 100.0}}
    assert l7_delta(before, after) == {"node1": {"source": 100.0}, "node2": {"destination": 100.0}}


def test_delta_is_unknown_when_a_scrape_failed() -> None:
    assert l7_delta(None, {"node1": {}}) is None
    assert l7_delta({"node1": {}}, None) is None
