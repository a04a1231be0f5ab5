"""What Prometheus scrapes is well-formed: `promtool check metrics` has nothing to say about ztunnel's and
control's /metrics on a running mesh that has carried traffic (so every ztunnel family has samples)."""

from __future__ import annotations

import functools

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.e2e.conftest import Lab
from tests.e2e.mesh_helpers import curl, metric, reaches, url
from tests.promtool import promtool_problems


def scrape(lab: Lab, node: str, address: str) -> str:
    out = lab.exec(node, "curl", "-sS", "-m", "5", address)
    assert out.stdout.endswith("\n"), f"{address} answered {out.stdout[-200:]!r}"
    return out.stdout


def counted_a_close(lab: Lab, node: str) -> bool:
    return metric(lab, node, "istio_tcp_connections_closed_total") >= 1


def test_ztunnel_and_control_metrics_pass_promtool(shared_lab: Lab) -> None:
    lab = shared_lab
    assert reaches(lab, "web-1a", url(lab, "web-2a"))  # over HBONE: node1 is the source, node2 the destination
    assert curl(lab, "web-1a", url(lab, "web-1b")).returncode == 0  # on node1 only
    for node in ("node1", "node2"):
        wait_for(functools.partial(counted_a_close, lab, node), 10, f"{node}'s ztunnel to count a closed connection")
    texts = {
        "ztunnel node1": scrape(lab, "node1", "http://127.0.0.1:15020/metrics"),
        "ztunnel node2": scrape(lab, "node2", "http://127.0.0.1:15020/metrics"),
        "control": scrape(lab, "node1", lab.status["control"]["metrics"].rstrip("/") + "/metrics"),
    }
    assert "istio_tcp_sent_bytes_total{" in texts["ztunnel node1"]

    for what, text in texts.items():
        assert promtool_problems(text) == [], what

    types = {f.name: f.type for f in text_string_to_metric_families(texts["ztunnel node1"])}
    assert types["meshlet_ztunnel_hbone_handshakes"] == "counter"
    assert types["meshlet_ztunnel_zds_failed_messages"] == "counter"
    assert types["meshlet_ztunnel_open_connections"] == "gauge"
    assert metric(lab, "node1", "meshlet_ztunnel_hbone_handshakes_total") >= 1
