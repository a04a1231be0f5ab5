"""The benchmark's arithmetic without a lab: wrk's and curl's output read right, ratios and targets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench import report
from tests.bench.workloads import WorkloadError, parse_curl_bulk, parse_wrk, wrk_argv

WRK_C1 = """\
Running 3s test @ http://10.244.9.3:8081/1k
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   121.13us  242.79us   4.14ms   97.05%
    Req/Sec    10.91k     0.93k   14.04k    73.33%
  Latency Distribution
     50%   87.00us
     75%   91.00us
     90%  108.00us
     99%    1.16ms
  32546 requests in 3.00s, 39.67MB read
Requests/sec:  10847.17
Transfer/sec:     13.22MB
"""

WRK_ALL_FAILED = """\
Running 3s test @ http://10.244.9.2:8081/1k
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 3.01s, 0.00B read
  Socket errors: connect 0, read 9700, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
"""


def test_wrk_report_gives_rate_percentiles_in_ms_and_totals() -> None:
    res = parse_wrk(WRK_C1)
    assert res.rps == pytest.approx(10847.17)
    assert res.requests == 32546
    assert res.seconds == pytest.approx(3.0)
    assert res.p50_ms == pytest.approx(0.087)
    assert res.p99_ms == pytest.approx(1.16)
    assert res.errors == {}


def test_wrk_latency_in_seconds_and_errors_counted() -> None:
    text = WRK_C1.replace("1.16ms", "1.50s").replace(
        "Requests/sec",
        "  Socket errors: connect 2, read 0, write 0, timeout 7\n  Non-2xx or 3xx responses: 3\nRequests/sec",
    )
    res = parse_wrk(text)
    assert res.p99_ms == pytest.approx(1500.0)
    assert res.errors == {"connect": 2, "timeout": 7, "non-2xx/3xx": 3}


def test_wrk_with_nothing_completed_has_no_latency_not_zero_latency() -> None:
    res = parse_wrk(WRK_ALL_FAILED)
    assert res.rps == 0.0 and res.requests == 0
    assert res.p50_ms is None and res.p99_ms is None
    assert res.errors == {"read": 9700}


@pytest.mark.parametrize("text", ["", "unable to connect to 10.244.9.2:8081 Connection refused\n"])
def test_wrk_output_without_a_result_is_an_error(text: str) -> None:
    with pytest.raises(WorkloadError):
        parse_wrk(text)


def test_wrk_command_threads_follow_connections() -> None:
    assert wrk_argv("http://h/1k", 1, 5)[:3] == ["wrk", "-t1", "-c1"]
    assert wrk_argv("http://h/1k", 16, 5)[:4] == ["wrk", "-t2", "-c16", "-d5s"]
    closing = wrk_argv("http://h/1k", 16, 5, close=True)
    assert closing[-3:] == ["-H", "Connection: close", "http://h/1k"]


def test_curl_speed_is_gbit_per_s_and_a_short_download_is_an_error() -> None:
    assert parse_curl_bulk("200 104857600 1250000000.000", 104857600).gbit_per_s == pytest.approx(10.0)
    with pytest.raises(WorkloadError, match="52428800 of 104857600"):
        parse_curl_bulk("200 52428800 100", 104857600)
    with pytest.raises(WorkloadError):
        parse_curl_bulk("000 0 0", 104857600)


def _result(rps: float, gbit: float, rss_kb: dict[str, int], per_conn: dict[str, float], held: int) -> dict[str, Any]:
    return {
        "c1": {"rps": rps, "p50_ms": 0.2, "p99_ms": 1.0, "proxy_cpu_us_per_request": 100.0 if rss_kb else None},
        "c4": {"rps": rps * 2, "p50_ms": 0.4, "p99_ms": 2.0},
        "c16": {"rps": rps * 3, "p50_ms": 0.8, "p99_ms": 3.0},
        "bulk": {"gbit_per_s": gbit},
        "new_connections": {"rps": rps / 2},
        "rss_idle_kb": rss_kb,
        "hold": {"kb_per_connection": per_conn, "kb_per_connection_total": sum(per_conn.values()) or None},
        "hold_max": {
            "held": held,
            "errors": {} if held == 10000 else {"ECONNRESET": 10000 - held},
            "rss_with_kb": rss_kb,
        },
    }


RESULTS = {
    "A": {**_result(10000, 16.0, {}, {}, 10000), "c1": {"rps": 10000, "p50_ms": 0.05, "p99_ms": 0.2}},
    "B": _result(5000, 2.0, {"node1": 20480, "node2": 20480}, {"node1": 40.0, "node2": 50.0}, 10000),
    "C": _result(6000, 1.5, {"node1": 51200, "node2": 71680}, {"node1": 3.0, "node2": 5.0}, 9990),
    "D": None,
}


def test_ratios_are_same_run_quotients_and_missing_when_a_side_is() -> None:
    rats = report.ratios(report.values(RESULTS))
    assert rats["c1_rps"]["C/B"] == pytest.approx(1.2)
    assert rats["c1_rps"]["C/A"] == pytest.approx(0.6)
    assert rats["bulk_gbit_per_s"]["C/B"] == pytest.approx(0.75)
    assert rats["c1_rps"]["D/B"] is None  # D unavailable
    assert rats["cpu_us_per_request_c1"]["C/A"] is None  # no proxy on the direct path
    assert rats["rss_idle_mb_node"]["C/B"] == pytest.approx(70 / 20)  # the largest node proxy
    assert rats["rss_idle_mb_total"]["C/B"] == pytest.approx(120 / 40)


def test_ratio_of_nothing_or_over_zero_is_none() -> None:
    assert report.ratio(1.0, 0.0) is None
    assert report.ratio(None, 2.0) is None
    assert report.ratio(3.0, 2.0) == pytest.approx(1.5)


def test_targets_judge_ratios_and_per_node_limits() -> None:
    vals = report.values(RESULTS)
    got = {(t["scenario"], t["target"]): t["holds"] for t in report.targets(vals, report.ratios(vals), 10000)}
    assert got[("C", "c=1 req/s: C/B >= 1.0")] is True
    assert got[("C", "c=4 req/s: C/B >= 1.0")] is True
    assert got[("C", "c=1 p50 added over direct (A) <= 0.10 ms")] is False  # 0.2 against 0.05: 0.15 added
    assert got[("C", "bulk Gbit/s (1 connection): C/B >= 1.0")] is False
    assert got[("C", "node proxy RSS idle <= 60 MB")] is False  # node2 holds 70 MB
    assert got[("C", "node proxy RSS <= 16 KB per idle connection")] is True
    assert got[("C", "10,000 concurrent connections held without an error")] is False
    assert all(holds is None for (s, _), holds in got.items() if s == "D")
