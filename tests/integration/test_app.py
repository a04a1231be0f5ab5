"""The sample app as a real process on loopback, driven by curl, http.client, raw sockets and wsproto."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def app(tmp_path: Path) -> Iterator[str]:
    """The app on a free loopback port; what it logs goes to `tmp_path / "app.log"`."""
    port = _free_port()
    log = open(tmp_path / "app.log", "wb")  # noqa: SIM115 (closed after the process ends)
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
        stderr=log,
    )
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() or True, 10, "app")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        log.close()


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
        ["curl", "-sS", "-m", "10", "-w", "%{http_code}", "-o", "/dev/null", app + "/?delay=forever"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == "400"


# --- endpoints for the L7 tests: real sockets on loopback, http.client and wsproto as independent clients --------


def _conn(app: str) -> http.client.HTTPConnection:
    host, port = urlsplit(app).netloc.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def _ask(c: http.client.HTTPConnection, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, bytes]:
    c.request(method, path, body=body, headers=headers)
    resp = c.getresponse()
    return resp.status, resp.read()


def test_status_answers_the_code_asked_for_with_any_method(app: str) -> None:
    with closing(_conn(app)) as c:
        for method, code in (("GET", 200), ("POST", 503), ("DELETE", 404), ("PUT", 418), ("GET", 204)):
            status, body = _ask(c, method, f"/status/{code}", body=b"x" * 1000 if method != "GET" else None)
            assert status == code
            assert body == (b"" if code == 204 else f"status {code}\n".encode())
        assert _ask(c, "GET", "/status/abc")[0] == 400
        assert _ask(c, "GET", "/healthz") == (200, b"ok\n")  # one keep-alive connection all along: bodies were drained


def test_public_and_admin_paths_answer_every_method(app: str) -> None:
    with closing(_conn(app)) as c:
        for method, path in (
            ("GET", "/public"),
            ("POST", "/public/a/b"),
            ("DELETE", "/admin/users/1"),
            ("PUT", "/admin"),
        ):
            status, body = _ask(c, method, path + "?q=1", body=b"{}" if method in ("POST", "PUT") else None)
            assert status == 200 and json.loads(body) == {"path": path, "method": method}
        status, body = _ask(c, "GET", "/private")
        assert status == 200 and json.loads(body)["path"] == "/private"  # any other path echoes


def test_headers_come_back_as_json_with_lowercased_names(app: str) -> None:
    with closing(_conn(app)) as c:
        status, body = _ask(c, "GET", "/headers", **{"X-Request-Id": "abc", "traceparent": "00-1-2-01"})
        seen = json.loads(body)
        assert status == 200 and seen["x-request-id"] == "abc" and seen["traceparent"] == "00-1-2-01"
        assert seen["host"].startswith("127.0.0.1:")


def test_upload_hashes_content_length_and_chunked_bodies(app: str) -> None:
    data = bytes(range(256)) * 20000 + b"tail"  # about 5 MB, in pieces of odd sizes when chunked
    with closing(_conn(app)) as c:
        status, body = _ask(c, "POST", "/upload", body=data)
        assert status == 200 and json.loads(body) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        pieces = (data[i : i + 70001] for i in range(0, len(data), 70001))
        c.request("PUT", "/upload", body=pieces, encode_chunked=True)
        resp = c.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        status, body = _ask(c, "POST", "/upload", body=b"")
        assert json.loads(body) == {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def test_a_malformed_chunked_upload_gets_400_naming_the_problem(app: str) -> None:
    with socket.create_connection(_address(app), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        head, body = _read_response(s)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert "not hexadecimal" in json.loads(body)["error"]


def test_download_and_head(app: str) -> None:
    with closing(_conn(app)) as c:
        status, body = _ask(c, "GET", "/download?n=100000")
        assert status == 200 and len(body) == 100000 and body[:3] == b"\x00\x01\x02"
        c.request("HEAD", "/download?n=100000")
        resp = c.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == "100000" and resp.read() == b""
        c.request("HEAD", "/public/x")
        resp = c.getresponse()
        assert resp.status == 200 and int(resp.getheader("Content-Length") or 0) > 0 and resp.read() == b""
        assert _ask(c, "GET", "/healthz") == (200, b"ok\n")  # HEAD sent no body that would break the next response


def test_expect_100_continue_is_answered_before_the_body(app: str) -> None:
    with socket.create_connection(_address(app), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = s.recv(1)
            assert chunk, "the app closed instead of answering 100 Continue"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 ")
        s.sendall(b"hello")
        head, body = _read_response(s)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body) == {"bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}


def test_websocket_echoes_text_binary_and_pings_then_closes(app: str) -> None:
    ws = WSConnection(ConnectionType.CLIENT)
    big = bytes(range(256)) * 1000  # over 64 KiB: the 64-bit length form
    with socket.create_connection(_address(app), timeout=10) as s:
        s.sendall(ws.send(Request(host="127.0.0.1", target="/ws")))
        events = _ws_events(s, ws, lambda e: isinstance(e, AcceptConnection))
        assert isinstance(events[-1], AcceptConnection)
        s.sendall(ws.send(Message(data="héllo")) + ws.send(Message(data=big)) + ws.send(Ping(b"p1")))
        got = _ws_events(s, ws, lambda e: isinstance(e, Pong))
        texts = "".join(e.data for e in got if isinstance(e, TextMessage))
        binary = b"".join(e.data for e in got if isinstance(e, BytesMessage))
        assert texts == "héllo" and binary == big and any(isinstance(e, Pong) and e.payload == b"p1" for e in got)
        s.sendall(ws.send(CloseConnection(code=1000)))
        closed = _ws_events(s, ws, lambda e: isinstance(e, CloseConnection))
        assert isinstance(closed[-1], CloseConnection) and closed[-1].code == 1000
        assert s.recv(1) == b""  # the app ended the connection after the close


def test_ws_without_an_upgrade_gets_426(app: str) -> None:
    with closing(_conn(app)) as c:
        status, _ = _ask(c, "GET", "/ws")
        assert status == 426


def _address(app: str) -> tuple[str, int]:
    host, port = urlsplit(app).netloc.rsplit(":", 1)
    return host, int(port)


def _read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """One response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head, body


def _ws_events(s: socket.socket, ws: WSConnection, until: Callable[[Event], bool]) -> list[Event]:
    """Feed what the socket receives into wsproto until an event satisfies `until`; the socket timeout bounds it."""
    events: list[Event] = []
    while True:
        data = s.recv(65536)
        ws.receive_data(data or None)
        for event in ws.events():
            events.append(event)
            if until(event):
                return events
        assert data, f"connection closed; events so far: {events}"


def test_websocket_closes_with_1002_on_an_unmasked_client_frame(app: str) -> None:
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(_address(app), timeout=10) as s:
        s.sendall(ws.send(Request(host="127.0.0.1", target="/ws")))
        _ws_events(s, ws, lambda e: isinstance(e, AcceptConnection))
        s.sendall(b"\x81\x02hi")  # a text frame without the mask clients must set (RFC 6455 section 5.1)
        closed = _ws_events(s, ws, lambda e: isinstance(e, CloseConnection))
        assert isinstance(closed[-1], CloseConnection) and closed[-1].code == 1002


# --- steering, by the Gateway API conformance echo server's conventions ---------------------------------------------


def test_any_other_path_echoes_the_request_and_who_answered(app: str) -> None:
    with closing(_conn(app)) as c:
        c.request("PATCH", "/some/where?a=1&a=2&b=", body=b"{}", headers={"X-Request-Id": "r1", "x-multi": "one"})
        resp = c.getresponse()
        answer = json.loads(resp.read())
    assert resp.status == 200 and resp.getheader("X-Pod") == "p1"
    assert (answer["pod"], answer["namespace"], answer["method"]) == ("p1", "ns1", "PATCH")
    assert answer["path"] == "/some/where?a=1&a=2&b=" and answer["query"] == {"a": ["1", "2"], "b": [""]}
    assert answer["host"].startswith("127.0.0.1:") and answer["proto"] == "HTTP/1.1"
    assert answer["headers"]["X-Request-Id"] == ["r1"] and answer["headers"]["X-Multi"] == ["one"]


def test_delay_waits_before_answering_and_bad_delays_are_refused(app: str) -> None:
    with closing(_conn(app)) as c:
        started = time.monotonic()
        status, _ = _ask(c, "GET", "/anything?delay=300ms")
        elapsed = time.monotonic() - started
        assert status == 200 and 0.3 <= elapsed < 2.0
        status, body = _ask(c, "GET", "/status/503?delay=1h")
        assert status == 400 and "limit" in json.loads(body)["error"]


def test_echo_set_header_adds_response_headers(app: str) -> None:
    with closing(_conn(app)) as c:
        c.request("GET", "/status/201", headers={"X-Echo-Set-Header": "X-Foo: 1, X-Bar:two,X-Foo:3"})
        resp = c.getresponse()
        resp.read()
    assert resp.status == 201 and resp.getheader("X-Foo") == "1,3" and resp.getheader("X-Bar") == "two"


def test_retry_fails_the_first_k_requests_of_a_uuid_with_the_code_asked_for(app: str) -> None:
    with closing(_conn(app)) as c:
        codes = [_ask(c, "GET", "/retry/x?uuid=u1&succeedAfter=2&responseCode=503")[0] for _ in range(4)]
        assert codes == [503, 503, 200, 200]
        assert _ask(c, "GET", "/retry/x?uuid=u2&succeedAfter=1&responseCode=500")[0] == 500  # counted per uuid
        assert _ask(c, "GET", "/retry/x?succeedAfter=1")[0] == 400


def test_retry_without_a_code_resets_the_connection_then_succeeds(app: str) -> None:
    request = b"GET /retry/r?uuid=u3&succeedAfter=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    with socket.create_connection(_address(app), timeout=10) as s:
        s.sendall(request)
        with pytest.raises(ConnectionResetError):
            while s.recv(65536):
                pass
    with socket.create_connection(_address(app), timeout=10) as s:
        s.sendall(request)
        head, _ = _read_response(s)
    assert head.startswith(b"HTTP/1.1 200 ")


def test_every_answered_request_is_logged_with_its_path_and_query(app: str, tmp_path: Path) -> None:
    with closing(_conn(app)) as c:
        for i in range(3):
            _ask(c, "GET", f"/mirror/me?n={i}")

    def logged() -> list[str]:
        return [line for line in (tmp_path / "app.log").read_text().splitlines() if "/mirror/me?n=" in line]

    wait_for(lambda: len(logged()) == 3, 5, "three log lines")
    assert all('"GET /mirror/me?n=' in line and " 200 " in line for line in logged())
