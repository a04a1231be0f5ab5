"""The sample app as a real process on loopback, driven by curl."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def app() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshlet.lab.app",
            "--pod",
            "p1",
            "--namespace",
            "ns1",
            "--node",
            "n1",
            "--ip",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() or True, 10, "app")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--fail-with-body", "-m", "10", *args], capture_output=True, check=True)


def test_root_reports_identity_and_the_peer_it_saw(app: str) -> None:
    answer = json.loads(curl(app + "/").stdout)
    assert answer["pod"] == "p1" and answer["namespace"] == "ns1" and answer["node"] == "n1"
    host, port = answer["peer"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0


def test_bytes_returns_exactly_n_bytes(app: str) -> None:
    body = curl(app + "/bytes?n=1000003").stdout
    assert len(body) == 1000003
    assert body[:3] == b"\x00\x01\x02"


def test_sha256_of_an_upload(app: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096 + b"tail"
    (tmp_path / "up").write_bytes(data)
    answer = json.loads(curl("--data-binary", f"@{tmp_path / 'up'}", app + "/sha256").stdout)
    assert (answer["sha256"], answer["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))


def test_keep_alive_serves_several_requests_on_one_connection(app: str) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-m",
            "10",
            "-w",
            "%{num_connects}\n",
            "-o",
            "/dev/null",
            app + "/healthz",
            "-o",
            "/dev/null",
            app + "/healthz",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["1", "0"]  # the second request reused the first connection


def test_bad_input_gets_a_4xx_naming_the_problem(app: str) -> None:
    proc = subprocess.run(["curl", "-sS", "-m", "10", app + "/bytes?n=lots"], capture_output=True, check=True)
    assert json.loads(proc.stdout) == {"error": "n must be an integer"}
    proc = subprocess.run(
        ["curl", "-sS", "-m", "10", "-w", "%{http_code}", "-o", "/dev/null", app + "/nope"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == "404"
