"""Request metrics for the L7 engine (istio_requests_total and Istio's three histograms), istio_build and
the process metrics: what Prometheus scrapes, checked with its own parser and linter."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.promtool import ISTIO_NAMING, promtool_check_metrics, promtool_problems
from ztunnel.metrics import (
    DURATION_BUCKETS,
    REQUEST_LABELS,
    SIZE_BUCKETS,
    TCP_LABELS,
    Metrics,
    Peer,
    request_labels,
    request_protocol,
    tcp_labels,
)

CLIENT = Peer("productpage-v1", "shop", "spiffe://cluster.local/ns/shop/sa/productpage", "productpage", "v1")
SERVER = Peer("reviews-v2", "shop", "spiffe://cluster.local/ns/shop/sa/reviews", "reviews", "v2")


def families(metrics: Metrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = metrics.render()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_request_labels_add_the_response_code_and_grpc_status_to_the_tcp_set() -> None:
    assert REQUEST_LABELS == (
        *TCP_LABELS[:21],
        "response_code",
        "grpc_response_status",
        "response_flags",
        "connection_security_policy",
    )
    values = dict(
        zip(
            REQUEST_LABELS,
            request_labels("destination", CLIENT, SERVER, ("shop", "reviews"), True, 503, "UF", "14", "grpc"),
            strict=True,
        )
    )
    assert (values["reporter"], values["request_protocol"], values["response_code"]) == ("destination", "grpc", "503")
    assert (values["grpc_response_status"], values["response_flags"]) == ("14", "UF")
    assert values["connection_security_policy"] == "mutual_tls"
    plain = request_labels("source", CLIENT, SERVER, None, False, 200)
    assert plain[-5:] == ("http", "200", "", "-", "unknown")


def test_requests_are_counted_per_code_and_histograms_are_cumulative() -> None:
    metrics = Metrics()
    ok = request_labels("source", CLIENT, SERVER, ("shop", "reviews"), True, 200)
    denied = request_labels("source", CLIENT, SERVER, ("shop", "reviews"), True, 403)
    for duration, sent, got in ((0.3, 0, 512), (7.0, 100, 5000), (1.0, 10, 1)):  # 1.0 falls in le="1" (inclusive)
        metrics.request_done(ok, duration, sent, got)
    metrics.request_done(denied, 4_000_000.0, 2_000_000_000, 19)  # above every bound: only +Inf

    got = families(metrics)

    by_code = {labels["response_code"]: value for _, labels, value in got["istio_requests"]}
    assert by_code == {"200": 3, "403": 1}
    samples = [(name, labels, value) for name, labels, value in got["istio_request_duration_milliseconds"]]
    ok_buckets = {
        labels["le"]: value
        for name, labels, value in samples
        if name.endswith("_bucket") and labels["response_code"] == "200"
    }
    assert list(ok_buckets) == [*(str(float(b)) for b in DURATION_BUCKETS), "+Inf"]
    assert (ok_buckets["0.5"], ok_buckets["1.0"], ok_buckets["5.0"], ok_buckets["10.0"]) == (1, 2, 2, 3)
    assert ok_buckets["+Inf"] == 3
    values = list(ok_buckets.values())
    assert values == sorted(values)  # cumulative
    totals = {(n.rsplit("_", 1)[1], lab["response_code"]): v for n, lab, v in samples if not n.endswith("_bucket")}
    assert totals[("count", "200")] == 3 and totals[("sum", "200")] == 8.3
    assert totals[("count", "403")] == 1
    denied_buckets = [v for n, lab, v in samples if n.endswith("_bucket") and lab["response_code"] == "403"]
    assert denied_buckets == [0] * len(DURATION_BUCKETS) + [1]
    request_sizes = {
        lab["le"]: v
        for n, lab, v in got["istio_request_bytes"]
        if n.endswith("_bucket") and lab["response_code"] == "403"
    }
    assert list(request_sizes) == [*(str(float(b)) for b in SIZE_BUCKETS), "+Inf"]
    assert request_sizes["1000000000.0"] == 0 and request_sizes["+Inf"] == 1
    response_sum = [
        v for n, lab, v in got["istio_response_bytes"] if n.endswith("_sum") and lab["response_code"] == "200"
    ]
    assert response_sum == [5513]


def test_build_and_process_metrics_are_exported() -> None:
    got = families(Metrics(version="1.2.3"))
    assert got["istio_build"] == [("istio_build", {"component": "ztunnel", "tag": "1.2.3"}, 1)]
    assert "process_cpu_seconds" in got and "process_resident_memory_bytes" in got
    assert got["process_resident_memory_bytes"][0][2] > 0


def test_promtool_accepts_every_family_with_requests_recorded() -> None:
    metrics = Metrics()
    metrics.request_done(request_labels("destination", CLIENT, SERVER, None, True, 200), 12.5, 300, 4000)
    tcp = tcp_labels("destination", CLIENT, SERVER, None, True, "DENY")
    metrics.opened[tcp] += 1
    metrics.connection_closed(tcp, 0, 0)
    metrics.identity_mismatches += 1

    # Istio's name, which its dashboards query, is in milliseconds; promtool's naming lint prefers seconds.
    # That is the one remark allowed: the text itself must be valid.
    text = metrics.render()
    assert promtool_problems(text) == []
    assert promtool_check_metrics(text).splitlines() == sorted(ISTIO_NAMING)


def test_grpc_requests_are_told_by_their_content_type() -> None:
    assert request_protocol("application/grpc") == request_protocol("application/grpc+proto") == "grpc"
    assert request_protocol("Application/GRPC; charset=utf-8") == "grpc"
    assert request_protocol("application/grpc-web") == "http"  # gRPC-Web is HTTP to the proxy
    assert request_protocol("application/json") == request_protocol(None) == "http"
