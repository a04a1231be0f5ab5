"""The sample app every lab pod runs on port 8080: tells who it is and who called it.

- `GET /` -> JSON {pod, namespace, node, ip, peer}: `peer` is the address the app saw, so a test can
  check that the mesh preserved the caller's pod IP.
- `GET /healthz` -> `ok` (the pod's readiness probe).
- `GET /bytes?n=N` -> N bytes of a fixed pattern (bulk transfers).
- `POST /sha256` -> JSON {sha256, bytes, pod, peer, ...} of the request body (integrity of large uploads).
- `POST /echo` -> the request body.
Stdlib only and one thread per connection: it starts in a fraction of a second and needs nothing the
pod might not have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BYTES = 1 << 30
CHUNK = 64 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)


class AppHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection to the sample app (keep-alive supported)."""

    protocol_version = "HTTP/1.1"
    server: AppServer

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: dict[str, Any], status: int = 200) -> None:
        self._reply(status, json.dumps(obj).encode() + b"\n")

    def do_GET(self) -> None:  # noqa: N802 (name set by http.server)
        url = urlsplit(self.path)
        if url.path == "/":
            self._json({**self.server.identity, "peer": f"{self.client_address[0]}:{self.client_address[1]}"})
        elif url.path == "/healthz":
            self._reply(200, b"ok\n", "text/plain")
        elif url.path == "/bytes":
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
            while n > 0:
                chunk = PATTERN[: min(n, CHUNK)]
                self.wfile.write(chunk)
                n -= len(chunk)
        else:
            self._json({"error": f"no route for {url.path}"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 <= length <= MAX_BYTES:
            return self._json({"error": "body too large"}, 413)
        path = urlsplit(self.path).path
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
        elif path == "/echo":
            self._reply(200, self.rfile.read(length), "application/octet-stream")
        else:
            self._json({"error": f"no route for {path}"}, 404)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of http.server)
        sys.stderr.write(f"{self.client_address[0]}:{self.client_address[1]} {format % args}\n")


class AppServer(ThreadingHTTPServer):
    """The server, holding the identity it reports."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], identity: dict[str, str]) -> None:
        super().__init__(addr, AppHandler)
        self.identity = identity


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
    server = AppServer((args.listen, args.port), identity)
    print(f"sample app {args.namespace}/{args.pod} listening on {args.listen}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
