"""The sample app every lab pod runs on port 8080: tells who it is and who called it.

- `GET /` -> JSON {pod, namespace, node, ip, peer}: `peer` is the address the app saw, so a test can
  check that the mesh preserved the caller's pod IP.
- `GET /healthz` -> `ok` (the pod's readiness probe).
- `GET /bytes?n=N` -> N bytes of a fixed pattern (bulk transfers).
- `POST /sha256` -> JSON {sha256, bytes, pod, peer, ...} of the request body (integrity of large uploads).
- `POST /echo` -> the request body.
For the L7 tests:
- `/status/<code>` (any method) -> that status with a short body.
- `/public*` and `/admin*` (any method) -> 200 JSON {path, method}: targets for path-based policies.
- `GET /headers` -> JSON of the request headers (lowercased names; repeats joined by ", ").
- `POST|PUT /upload` -> JSON {bytes, sha256} of a body of any size, Content-Length or chunked, read streaming.
- `GET /download?n=N` -> N bytes, as `/bytes`.
- `GET /ws` -> a WebSocket echo (`meshlet.lab.app_websocket`).
Steering, by the conventions of the Gateway API conformance echo server (`meshlet.lab.app_echo`):
- any other path (any method) -> 200 JSON echo: pod, namespace, method, path and query, host, headers;
- `?delay=<duration>` on any path waits that long first (at most 30 s);
- request header `X-Echo-Set-Header: Name:value,...` adds those headers to the response;
- `/retry/...?uuid=U&succeedAfter=K[&responseCode=C]` fails the first K requests with uuid U (answering C, or
  resetting the connection without C), then echoes.
A whole pod misbehaves when its environment says so (`ECHO_DELAY`, `ECHO_STATUS`, `ECHO_RESET_EVERY`: see
`meshlet.lab.app_echo.Faults`), for every request but `/healthz` and the body routes (POST /sha256, /echo,
/upload).
Every answered request is logged on one line (`peer "METHOD target HTTP/1.1" status size`), and every reset
as `peer "METHOD target" reset`, so a test can count the requests (mirrored copies too) a pod got.
HEAD answers every GET path with its headers and no body; `Expect: 100-continue` is answered by http.server
(protocol_version is HTTP/1.1). A body the route does not read is drained, so keep-alive survives it.
Stdlib only and one thread per connection: it starts in a fraction of a second and needs nothing the
pod might not have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from meshlet.lab.app_body import CHUNK, BodyError, read_chunked
from meshlet.lab.app_echo import SET_HEADER, Faults, RetryBook, echo_answer, parse_duration, retry_ask, set_headers
from meshlet.lab.app_websocket import accept_key, echo, valid_key

MAX_BYTES = 1 << 30
PATTERN = bytes(range(256)) * (CHUNK // 256)


class AppHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the sample app (keep-alive supported)."""

    protocol_version = "HTTP/1.1"
    server: AppServer
    _head = False

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        if code >= 200:  # which pod answered: tests of load balancing and of the mesh's L7 path read it
            self.send_header("X-Pod", self.server.identity.get("pod", ""))
            if code != 101:
                for name, value in set_headers(self.headers.get_all(SET_HEADER) or ()):
                    self.send_header(name, value)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        if status in (204, 304):  # responses that never have a body (RFC 9110 sections 15.3.5, 15.4.5)
            self.end_headers()
            return
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def _json(self, obj: dict[str, Any], status: int = 200) -> None:
        self._reply(status, json.dumps(obj).encode() + b"\n")

    def _delayed(self, query: str) -> bool:
        """Wait as `?delay=` asks; False when it answered 400 to a bad delay instead."""
        delay = parse_qs(query).get("delay")
        if not delay:
            return True
        try:
            seconds = parse_duration(delay[0])
        except ValueError as exc:
            self._json({"error": str(exc)}, 400)
            return False
        time.sleep(seconds)  # one thread per connection: only this caller waits
        return True

    def _echo(self) -> None:
        self._json(
            echo_answer(self.server.identity, self.command, self.path, self.request_version, self.headers.items())
        )

    def _retry(self, query: str) -> None:
        try:
            ask = retry_ask(parse_qs(query))
        except ValueError as exc:
            return self._json({"error": str(exc)}, 400)
        if not self.server.retries.should_fail(ask.uuid, ask.succeed_after):
            return self._echo()
        if ask.response_code is not None:
            return self._reply(ask.response_code, f"failing on purpose for uuid {ask.uuid}\n".encode(), "text/plain")
        self._reset()

    def _reset(self) -> None:
        """Answer nothing and reset the connection (logged, so tests can count the resets)."""
        self.log_message('"%s %s" reset', self.command, self.path)
        # SO_LINGER 0 makes close() send RST instead of FIN; the server skips its graceful shutdown for it.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.server.resets.add(self.connection)

    def _faulted(self, path: str) -> bool:
        """True when the pod's faults (`Faults`) answered or reset this request instead of its route."""
        faults = self.server.faults
        if path == "/healthz" or not faults.any:
            return False
        if faults.delay:
            time.sleep(faults.delay)
        if faults.reset_now():
            self._reset()
            return True
        if faults.status is not None:
            self._reply(faults.status, f"status {faults.status} (ECHO_STATUS)\n".encode(), "text/plain")
            return True
        return False

    def _route_any(self, path: str) -> None:
        """The routes every method shares, after the body was drained."""
        if path.startswith("/retry/") or path == "/retry":
            self._retry(urlsplit(self.path).query)
        elif path.startswith("/status/"):
            code = path.removeprefix("/status/")
            if code.isascii() and code.isdigit() and 200 <= int(code) <= 599:
                self._reply(int(code), f"status {code}\n".encode(), "text/plain")
            else:
                self._json({"error": f"status must be a number in 200..599, got {code!r}"}, 400)
        elif path.startswith(("/public", "/admin")):
            self._json({"path": path, "method": self.command})
        else:
            self._echo()

    def do_GET(self) -> None:  # noqa: N802 (name set by http.server)
        url = urlsplit(self.path)
        self._drain()
        if self._faulted(url.path) or (url.path != "/ws" and not self._delayed(url.query)):
            return
        if url.path == "/":
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            self._json(
                {
                    **echo_answer(self.server.identity, "GET", self.path, self.request_version, self.headers.items()),
                    **self.server.identity,
                    "peer": peer,
                }
            )
        elif url.path == "/healthz":
            self._reply(200, b"ok\n", "text/plain")
        elif url.path in ("/bytes", "/download"):
            try:
                n = int(parse_qs(url.query).get("n", ["0"])[0])
            except ValueError:
                return self._json({"error": "n must be an integer"}, 400)
            if not 0 <= n <= MAX_BYTES:
                return self._json({"error": f"n must be within 0..{MAX_BYTES}"}, 400)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0 and not self._head:
                chunk = PATTERN[: min(n, CHUNK)]
                self.wfile.write(chunk)
                n -= len(chunk)
        elif url.path == "/headers":
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            self._json(headers)
        elif url.path == "/ws" and not self._head:
            self._websocket()
        else:
            self._route_any(url.path)

    def do_HEAD(self) -> None:  # noqa: N802
        self._head = True
        try:
            self.do_GET()
        finally:
            self._head = False

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path not in ("/sha256", "/echo"):
            return self._other()
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 <= length <= MAX_BYTES:
            return self._json({"error": "body too large"}, 413)
        if path == "/sha256":
            digest = hashlib.sha256()
            left = length
            while left > 0:
                chunk = self.rfile.read(min(left, CHUNK))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            self._json({**self.server.identity, "peer": peer, "sha256": digest.hexdigest(), "bytes": length - left})
        else:
            self._reply(200, self.rfile.read(length), "application/octet-stream")

    def _other(self) -> None:
        """PUT, DELETE, PATCH, OPTIONS, and POST outside /sha256 and /echo."""
        path = urlsplit(self.path).path
        if path == "/upload" and self.command in ("POST", "PUT"):
            return self._upload()
        self._drain()
        if not self._faulted(path) and self._delayed(urlsplit(self.path).query):
            self._route_any(path)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    def _upload(self) -> None:
        digest = hashlib.sha256()
        total = 0
        try:
            for chunk in self._body():
                digest.update(chunk)
                total += len(chunk)
        except BodyError as exc:
            self.close_connection = True  # where the next request starts is unknown now
            return self._json({"error": str(exc)}, 400)
        self._json({"bytes": total, "sha256": digest.hexdigest()})

    def _drain(self) -> None:
        """Read and drop a body the route does not use, so the next request on the connection parses."""
        try:
            for _ in self._body():
                pass
        except BodyError:
            self.close_connection = True

    def _body(self) -> Iterator[bytes]:
        """The request body in pieces of at most CHUNK bytes, whatever its framing; never held whole."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from read_chunked(self.rfile)
            return
        raw = self.headers.get("Content-Length", "0").strip()
        if not (raw.isascii() and raw.isdigit()):
            raise BodyError(f"Content-Length {raw[:20]!r} is not a length")
        left = int(raw)
        while left > 0:
            chunk = self.rfile.read(min(left, CHUNK))
            if not chunk:
                raise BodyError("body ended before its Content-Length")
            left -= len(chunk)
            yield chunk

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        upgrade = self.headers.get("Upgrade", "").lower() == "websocket"
        connection = "upgrade" in self.headers.get("Connection", "").lower()
        if not (upgrade and connection and valid_key(key) and self.headers.get("Sec-WebSocket-Version") == "13"):
            body = b'{"error": "expected a WebSocket handshake (RFC 6455, version 13)"}\n'
            self.send_response(400 if upgrade else 426)
            self.send_header("Sec-WebSocket-Version", "13")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True  # the connection never returns to HTTP
        echo(self.rfile, self.wfile)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of http.server)
        sys.stderr.write(f"{self.client_address[0]}:{self.client_address[1]} {format % args}\n")


class AppServer(ThreadingHTTPServer):
    """The server, holding the identity it reports."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], identity: dict[str, str], faults: Faults | None = None) -> None:
        super().__init__(addr, AppHandler)
        self.identity = identity
        self.faults = faults or Faults()
        self.retries = RetryBook()
        self.resets: set[socket.socket] = set()
        """Connections `/retry` fails by a reset: closed without the graceful shutdown (which would send FIN)."""

    def shutdown_request(self, request: Any) -> None:
        if request in self.resets:
            self.resets.discard(request)
            self.close_request(request)
        else:
            super().shutdown_request(request)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="meshlet lab sample app")
    parser.add_argument("--pod", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--ip", default="")
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    identity = {"pod": args.pod, "namespace": args.namespace, "node": args.node, "ip": args.ip}
    try:
        faults = Faults.from_env(os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    server = AppServer((args.listen, args.port), identity, faults)
    print(f"sample app {args.namespace}/{args.pod} listening on {args.listen}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
