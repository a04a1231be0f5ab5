"""Scenarios E (meshlet L7) and F (HAProxy mode http): their ratio, targets, columns and configuration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.bench import haproxy, nginx, report, services
from tests.bench.run import _scenarios


def _result(rps: float, cpu_us: float) -> dict[str, Any]:
    return {
        "c1": {"rps": rps, "p50_ms": 0.3, "p99_ms": 1.0, "proxy_cpu_us_per_request": cpu_us},
        "c16": {"rps": rps * 4, "p50_ms": 0.9, "p99_ms": 3.0, "proxy_cpu_us_per_request": cpu_us / 2},
    }


RESULTS: dict[str, dict[str, Any] | None] = {
    "A": None,
    "B": None,
    "C": None,
    "D": None,
    "E": _result(3000, 90.0),
    "F": _result(4000, 60.0),
}


def test_e_over_f_is_a_ratio_of_the_same_run() -> None:
    rats = report.ratios(report.values(RESULTS))
    assert rats["c1_rps"]["E/F"] == pytest.approx(0.75)
    assert rats["c16_rps"]["E/F"] == pytest.approx(0.75)
    assert rats["cpu_us_per_request_c16"]["E/F"] == pytest.approx(1.5)
    assert rats["c1_rps"]["D/B"] is None


def test_e_targets_are_judged_against_f() -> None:
    vals = report.values(RESULTS)
    got = {(t["scenario"], t["target"]): t["holds"] for t in report.targets(vals, report.ratios(vals), 10000)}
    assert got[("E", "c=1 req/s: E/F >= 1.0")] is False
    assert got[("E", "c=16 req/s: E/F >= 1.0")] is False
    assert got[("E", "proxy CPU µs/req, c=16: E/F <= 1.0")] is False
    faster = {**RESULTS, "E": _result(5000, 30.0)}
    vals = report.values(faster)
    got = {(t["scenario"], t["target"]): t["holds"] for t in report.targets(vals, report.ratios(vals), 10000)}
    assert all(holds for (s, _), holds in got.items() if s == "E")


def test_table_shows_e_beside_f_and_the_ratio_column() -> None:
    vals = report.values(RESULTS)
    console = Console(width=220, record=True)
    console.print(report.table(vals, report.ratios(vals), {"hold": 1000, "hold_max": 10000}))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "metric" in line)
    assert header.index("E L7 eBPF") < header.index("F HAProxy L7") < header.index("E/F")
    assert "0.75x" in text


def test_document_lists_e_and_f_and_their_reason_when_missing() -> None:
    doc = report.document(RESULTS, {"D": "not selected"}, {"hold": 1000, "hold_max": 10000}, {})
    assert doc["scenarios"]["E"]["available"] and doc["scenarios"]["F"]["available"]
    assert doc["scenarios"]["D"] == {"available": False, "reason": "not selected"}
    assert doc["metrics"]["c1_rps"]["ratios"]["E/F"] == pytest.approx(0.75)


def test_f_is_the_b_pair_in_http_mode_with_server_connections_reused() -> None:
    workdir = Path("/w")
    tcp_client, http_client = (
        haproxy.client_config(workdir, "10.0.0.2"),
        haproxy.client_config(workdir, "10.0.0.2", "http"),
    )
    assert "mode tcp" in tcp_client and "http-reuse" not in tcp_client
    assert "mode http" in http_client and "http-reuse always" in http_client
    server = haproxy.server_config(workdir, nginx.PORT, "http")
    assert "mode http" in server and "http-reuse always" in server and "verify required" in server
    # same certificates and TLS settings: only the mode lines differ
    assert http_client.replace("mode http", "mode tcp").count("ssl") == tcp_client.count("ssl")
    with pytest.raises(ValueError, match="udp"):
        haproxy.client_config(workdir, "10.0.0.2", "udp")


def test_only_the_e_service_port_is_http_and_it_does_not_target_the_l4_port() -> None:
    http_svc, tcp_svc = services.service_objects("mesh", "10.96.1.200", "10.96.1.201")
    (http_port,) = http_svc["spec"]["ports"]
    (tcp_port,) = tcp_svc["spec"]["ports"]
    assert http_port["name"] == "http" and http_port["appProtocol"] == "http"
    assert http_port["targetPort"] == nginx.L7_PORT != nginx.PORT
    assert tcp_port["name"] == "tcp-web" and "appProtocol" not in tcp_port
    assert tcp_port["targetPort"] == nginx.PORT
    assert http_svc["spec"]["selector"] == tcp_svc["spec"]["selector"] == {services.ROLE_LABEL: "server"}


def test_scenarios_option_takes_letters_with_or_without_commas() -> None:
    assert _scenarios("E,F") == "EF"
    assert _scenarios("abcdef") == "ABCDEF"
    with pytest.raises(argparse.ArgumentTypeError, match="H"):
        _scenarios("EH")


def test_nginx_listens_on_the_l7_port_only_when_asked() -> None:
    assert "listen 8082" not in nginx.config(Path("/w"), "web-2a")
    both = nginx.config(Path("/w"), "web-2a", (nginx.PORT, nginx.L7_PORT))
    assert f"listen {nginx.PORT} " in both and f"listen {nginx.L7_PORT} " in both
