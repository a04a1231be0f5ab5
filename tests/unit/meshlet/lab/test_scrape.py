"""The lab's reading of ztunnel's /metrics: every sample by the name on its line, labels unescaped."""

from __future__ import annotations

from meshlet.lab.scrape import samples
from ztunnel.metrics import Metrics, Peer, tcp_labels


def test_samples_are_read_back_as_ztunnel_wrote_them() -> None:
    metrics = Metrics()
    source = Peer("client", "a", "spiffe://cluster.local/ns/a/sa/client", "client")
    labels = tcp_labels("source", source, Peer(), None, mutual_tls=True)
    metrics.opened[labels] += 3
    metrics.errors[("outbound", 'said "no"\ntwice')] += 1
    metrics.gauge("meshlet_ztunnel_served_pods", "Pods served.", lambda: 2)

    got = samples(metrics.render())

    [(opened, value)] = [(lbl, v) for name, lbl, v in got if name == "istio_tcp_connections_opened_total"]
    assert value == 3
    assert opened["source_principal"] == "spiffe://cluster.local/ns/a/sa/client"
    assert opened["connection_security_policy"] == "mutual_tls"
    [errors] = [lbl for name, lbl, _ in got if name == "meshlet_connection_errors_total"]
    assert errors == {"direction": "outbound", "reason": 'said "no"\ntwice'}
    assert ("meshlet_ztunnel_served_pods", {}, 2) in got


def test_a_body_cut_short_yields_what_came_before_it() -> None:
    text = '# TYPE a gauge\na 1\n# TYPE b gauge\nb{x="unterminated 2\n'
    assert samples(text) == [("a", {}, 1)]
    assert samples("") == []
