"""ztunnel's /metrics text: what Prometheus scrapes, with Istio's TCP metric and label names."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.promtool import promtool_check_metrics
from ztunnel.metrics import TCP_LABELS, Metrics, Peer, tcp_labels

TCP_COUNTERS = {
    "istio_tcp_connections_opened": "opened",
    "istio_tcp_connections_closed": "closed",
    "istio_tcp_sent_bytes": "sent",
    "istio_tcp_received_bytes": "received",
}
CLIENT = Peer("client", "a", "spiffe://cluster.local/ns/a/sa/client", "client")
SERVER = Peer("server", "b", "spiffe://cluster.local/ns/b/sa/server", "server")

# The exposition format (0.0.4): a label value is any text in which `\`, `"` and newlines are escaped.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = rf'{_NAME}="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^{_NAME}(?:\{{{_LABEL}(?:,{_LABEL})*\}})? -?[0-9.eE+-]+$")
_COMMENT = re.compile(rf"^# (?:HELP {_NAME} .*|TYPE {_NAME} (?:counter|gauge|histogram))$")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name -> (labels, value) per sample, as Prometheus' own parser reads `text`."""
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def assert_exposition_format(text: str) -> None:
    """Every line is a comment or a sample line as the text format defines them (the parser is lenient)."""
    assert text.endswith("\n")
    for line in text.splitlines():
        assert _COMMENT.match(line) or _SAMPLE.match(line), f"not valid exposition format: {line!r}"


def test_tcp_counters_carry_istios_names_and_labels() -> None:
    metrics = Metrics()
    labels = tcp_labels("source", CLIENT, SERVER, ("b", "web"), mutual_tls=True)
    metrics.opened[labels] += 1
    metrics.connection_closed(labels, sent=100, received=2000)

    text = metrics.render()

    assert_exposition_format(text)
    families = samples(text)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    for family in TCP_COUNTERS:
        assert types[family] == "counter"
        [(got, _)] = families[family]
        assert sorted(got) == sorted(TCP_LABELS)  # every Istio label (the text format leaves their order free)
    [(got, _)] = families["istio_tcp_connections_opened"]
    assert got["reporter"] == "source"
    assert got["source_principal"] == "spiffe://cluster.local/ns/a/sa/client"
    assert got["destination_principal"] == "spiffe://cluster.local/ns/b/sa/server"
    assert got["destination_service"] == "web.b.svc.cluster.local"
    assert (got["destination_service_namespace"], got["destination_service_name"]) == ("b", "web")
    assert got["connection_security_policy"] == "mutual_tls"
    assert (got["request_protocol"], got["response_flags"]) == ("tcp", "-")


def test_a_plaintext_connection_without_a_service_is_labelled_unknown() -> None:
    labels = dict(zip(TCP_LABELS, tcp_labels("destination", Peer(), SERVER, None, mutual_tls=False), strict=True))
    assert labels["source_workload"] == labels["source_principal"] == "unknown"
    assert labels["destination_service"] == labels["destination_service_name"] == "unknown"
    assert labels["connection_security_policy"] == "unknown"  # Istio's ztunnel's word for plaintext


def test_label_values_are_escaped() -> None:
    awkward = Peer(workload='say "hi"', namespace="back\\slash", principal="two\nlines", app="ok")
    metrics = Metrics()
    metrics.opened[tcp_labels("destination", awkward, SERVER, None, True)] += 1
    metrics.errors[("inbound", 'reason with "quotes"\nand a newline')] += 1

    text = metrics.render()

    assert_exposition_format(text)
    families = samples(text)
    [(got, value)] = families["istio_tcp_connections_opened"]
    assert (got["source_workload"], got["source_workload_namespace"]) == ('say "hi"', "back\\slash")
    assert got["source_principal"] == "two\nlines"
    assert value == 1
    [(got, _)] = families["meshlet_connection_errors"]
    assert got["reason"] == 'reason with "quotes"\nand a newline'


def test_bytes_are_counted_when_a_connection_closes() -> None:
    metrics = Metrics()
    labels = tcp_labels("source", CLIENT, SERVER, None, True)
    metrics.opened[labels] += 2

    open_only = samples(metrics.render())
    assert open_only["istio_tcp_connections_opened"][0][1] == 2
    assert open_only["istio_tcp_sent_bytes"] == [] and open_only["istio_tcp_received_bytes"] == []

    metrics.connection_closed(labels, sent=10, received=1000)
    metrics.connection_closed(labels, sent=5, received=0)

    after = samples(metrics.render())
    assert after["istio_tcp_connections_closed"][0][1] == 2
    assert after["istio_tcp_sent_bytes"][0][1] == 15
    assert after["istio_tcp_received_bytes"][0][1] == 1000


def test_each_label_set_is_its_own_series() -> None:
    metrics = Metrics()
    source = tcp_labels("source", CLIENT, SERVER, None, True)
    destination = tcp_labels("destination", CLIENT, SERVER, None, True)
    metrics.opened[source] += 1
    metrics.opened[destination] += 3
    metrics.gauge("meshlet_workloads", "Workloads known.", lambda: 4)

    families = samples(metrics.render())

    by_reporter = {labels["reporter"]: value for labels, value in families["istio_tcp_connections_opened"]}
    assert by_reporter == {"source": 1, "destination": 3}
    assert families["meshlet_workloads"] == [({}, 4)]


def test_node_values_are_read_at_each_scrape_with_their_type_and_help() -> None:
    metrics = Metrics()
    handshakes = [0]
    metrics.counter("meshlet_ztunnel_hbone_handshakes_total", "HBONE connections opened.", lambda: handshakes[0])
    metrics.gauge("meshlet_ztunnel_served_pods", "Pods served.", lambda: 2)
    handshakes[0] = 7

    text = metrics.render()

    assert "meshlet_ztunnel_hbone_handshakes_total 7.0\n" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["meshlet_ztunnel_hbone_handshakes"].type == "counter"
    assert families["meshlet_ztunnel_served_pods"].type == "gauge"
    assert families["meshlet_ztunnel_served_pods"].documentation == "Pods served."
    with pytest.raises(ValueError):
        metrics.counter("meshlet_ztunnel_hbone_handshakes", "not a counter's name", lambda: 0)


def test_promtool_finds_nothing_to_flag() -> None:
    """What Prometheus' own linter says about the text, with every kind of family and an awkward label."""
    metrics = Metrics()
    labels = tcp_labels("source", CLIENT, SERVER, ("b", "web"), mutual_tls=True)
    metrics.opened[labels] += 1
    metrics.connection_closed(labels, sent=1, received=2)
    metrics.errors[("outbound", 'no "route"')] += 1
    metrics.decisions[("inbound", "allow")] += 1
    metrics.counter("meshlet_ztunnel_zds_failed_messages_total", "ZDS messages not applied.", lambda: 0)
    metrics.gauge("meshlet_ztunnel_open_connections", "Connections being relayed now.", lambda: 0)

    assert promtool_check_metrics(metrics.render()) == ""
