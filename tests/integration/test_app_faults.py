"""The sample app misbehaving as a whole when its environment says so (ECHO_DELAY, ECHO_STATUS, ECHO_RESET_EVERY),
as a real process on loopback: what a Deployment's container env makes a lab pod do to every caller."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def app(tmp_path: Path, **env: str) -> Iterator[int]:
    """The app on a free loopback port with `env` added to its environment; yields the port."""
    port = _free_port()
    argv = [sys.executable, "-m", "meshlet.lab.app", "--pod", "p1", "--namespace", "ns1", "--node", "n1",
            "--listen", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with open(tmp_path / "app.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **env})
        try:
            wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() or True, 10, "app")
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=5)


def get(port: int, path: str) -> int:
    """Status of one GET on a new connection; 0 when the connection was reset without an answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (ConnectionResetError, http.client.RemoteDisconnected):
        return 0
    finally:
        conn.close()


def test_reset_every_two_resets_every_second_request_but_never_the_probe(tmp_path: Path) -> None:
    with app(tmp_path, ECHO_RESET_EVERY="2") as port:
        assert [get(port, "/healthz") for _ in range(3)] == [200] * 3
        assert [get(port, f"/x/{i}") for i in range(6)] == [200, 0, 200, 0, 200, 0]
    resets = [line for line in (tmp_path / "app.log").read_text().splitlines() if line.endswith(" reset")]
    assert len(resets) == 3 and '"GET /x/1"' in resets[0]


def test_status_answers_every_request_with_that_code_but_the_probe(tmp_path: Path) -> None:
    with app(tmp_path, ECHO_STATUS="503") as port:
        assert [get(port, p) for p in ("/", "/status/200", "/retry?uuid=u", "/healthz")] == [503, 503, 503, 200]


def test_delay_slows_every_answer(tmp_path: Path) -> None:
    with app(tmp_path, ECHO_DELAY="300ms") as port:
        started = time.monotonic()
        assert get(port, "/slow") == 200
        assert time.monotonic() - started >= 0.3


def test_a_bad_fault_variable_stops_the_app_naming_it(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "meshlet.lab.app", "--pod", "p", "--namespace", "n", "--node", "x", "--port", "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={**os.environ, "ECHO_STATUS": "7"},
                          check=False)  # fmt: skip
    assert proc.returncode == 2 and "ECHO_STATUS" in proc.stderr


def test_without_fault_variables_every_request_is_answered(tmp_path: Path) -> None:
    with app(tmp_path) as port:
        assert [get(port, p) for p in ("/healthz", "/", "/x", "/x")] == [200, 200, 200, 200]
