"""The suite's own tools, without a lab: the load client against a local server (requests, the idle
connection, the paced download), and the report's merge and table (a figure measured once stays until a
later run measures it again)."""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.reliability import load_client, report

DOWNLOAD, DOWNLOAD_RATE = 128 * 1024, 512 * 1024


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"x" * int(self.path.split("n=")[1]) if self.path.startswith("/bytes?n=") else b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class names it so)
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_load_client_counts_requests_reuses_its_idle_connection_and_paces_its_download(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    args = argparse.Namespace(host="127.0.0.1", port=server.server_address[1], stop_file=str(stop),
                              ready_file=str(ready), interval=0.001, max_seconds=20.0,
                              download_bytes=DOWNLOAD, download_rate=DOWNLOAD_RATE)  # fmt: skip
    result: list[load_client.Outcome] = []
    runner = threading.Thread(target=lambda: result.append(load_client.run(args)))
    runner.start()
    wait_for(lambda: ready.exists() and int(ready.read_text()) >= 20, 10, "20 requests")
    stop.touch()
    runner.join(10)
    out = result[0]
    assert out.requests >= 20 and out.failed == 0 and out.errors == []
    assert out.idle_reused and out.idle_error is None
    assert out.download_kept and out.download_received == DOWNLOAD
    # Paced: the body after the first read's share (at most one buffer) took its size over the rate at least.
    assert out.download_seconds >= (DOWNLOAD - load_client.DOWNLOAD_BUFFER) / DOWNLOAD_RATE


def test_load_client_counts_a_refused_request_as_failed(tmp_path: Path) -> None:
    args = argparse.Namespace(host="127.0.0.1", port=1, stop_file=str(tmp_path / "stop"),
                              ready_file=str(tmp_path / "ready"), interval=0.001, max_seconds=1.0,
                              download_bytes=0, download_rate=1.0)  # fmt: skip
    with pytest.raises(ConnectionRefusedError):  # the idle connection opens first: no server, no load
        load_client.run(args)


def test_report_merges_runs_and_renders_every_row(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    first = report.Figures()
    first.record("iptables", "closed_port", samples=[0.1], exit_codes=[7], median_seconds=0.1, max_seconds=0.1)
    first.save(path)
    second = report.Figures()
    second.record("ebpf", "agent_kill", requests=100, failed=0)
    saved = second.save(path)
    assert set(saved["backends"]) == {"iptables", "ebpf"}  # the first run's figure is kept
    assert json.loads(path.read_text()) == saved
    assert saved["backends"]["ebpf"]["agent_kill"]["goals"] == {
        "Agent kill -9 and restart: new connections failed": "0"
    }
    lines = report.table(saved).splitlines()
    assert len(lines) == 2 + len(report.ROWS)
    assert "| Connection to a closed port refused in | < 0.5 s | 0.10 s (max 0.10 s) | n/a |" in lines
    assert "| Agent kill -9 and restart: new connections failed | 0 | n/a | 0 of 100 |" in lines
