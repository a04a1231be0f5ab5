"""HTTP clients the L7 e2e tests run inside a pod (through `meshlet lab exec`, so that the pod's capture applies).

- `session HOST PORT`: one keep-alive connection; reads one JSON request per stdin line ({method, path, headers}),
  writes one JSON line per answer ({status, body, local_port, pod}) so a test sees every request used one socket;
- `ws HOST PORT COUNT`: a WebSocket (wsproto, an independent implementation) to /ws, COUNT text messages echoed;
- `pipeline HOST PORT COUNT`: COUNT GET /public/<i> written at once on one connection, the paths answered in order;
- `raw HOST PORT HEX [--big-header N]`: bytes given in hex (with a header of N bytes added), then what comes back
  (first line), or `closed`.
Each prints JSON on stdout; any failure exits non-zero with the reason on stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
from typing import Any

import httptools
import wsproto
import wsproto.events

TIMEOUT = 30.0


def session(host: str, port: int) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    conn.connect()
    assert conn.sock is not None
    local_port = conn.sock.getsockname()[1]
    for line in sys.stdin:
        request: dict[str, Any] = json.loads(line)
        conn.request(request.get("method", "GET"), request["path"], headers=request.get("headers", {}))
        response = conn.getresponse()
        body = response.read()
        now_port = conn.sock.getsockname()[1] if conn.sock is not None else None
        answer = {
            "status": response.status,
            "body": body[:300].decode("utf-8", "replace"),
            "local_port": now_port,
            "first_port": local_port,
            "pod": response.getheader("x-pod", ""),
            "headers": {k.lower(): v for k, v in response.getheaders()},
        }
        print(json.dumps(answer), flush=True)
    conn.close()


def websocket(host: str, port: int, count: int) -> None:
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.sendall(ws.send(wsproto.events.Request(host=host, target="/ws")))
    accepted = False
    messages: list[str] = []
    partial = ""
    sent = False
    deadline = time.monotonic() + TIMEOUT
    while len(messages) < count and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, wsproto.events.AcceptConnection):
                accepted = True
            elif isinstance(event, wsproto.events.TextMessage):  # a message may come in parts
                partial += event.data
                if event.message_finished:
                    messages.append(partial)
                    partial = ""
            elif isinstance(event, wsproto.events.RejectConnection):
                raise SystemExit(f"upgrade rejected: {event.status_code}")
        if accepted and not sent:
            for i in range(count):
                sock.sendall(ws.send(wsproto.events.TextMessage(data=f"frame {i} " + "x" * (i * 1000))))
            sent = True
    sock.sendall(ws.send(wsproto.events.CloseConnection(code=1000)))
    sock.close()
    print(json.dumps({"accepted": accepted, "messages": [m[:20] for m in messages], "sizes": list(map(len, messages))}))


class _Responses:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._body = b""

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())
        self.bodies.append(self._body)


def pipeline(host: str, port: int, count: int) -> None:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    requests = b"".join(b"GET /public/%d HTTP/1.1\r\nHost: web\r\n\r\n" % i for i in range(count))
    sock.sendall(requests)
    responses = _Responses()
    while len(responses.bodies) < count:
        data = sock.recv(65536)
        if not data:
            break
        responses.parser.feed_data(data)
    sock.close()
    paths = [json.loads(body)["path"] for body in responses.bodies]
    print(json.dumps({"statuses": responses.statuses, "paths": paths}))


def raw(host: str, port: int, data: bytes, pause: float) -> None:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.sendall(data)
    if pause:
        time.sleep(pause)
    got = b""
    started = time.monotonic()
    try:
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError as exc:
        print(json.dumps({"error": str(exc)}))
        return
    finally:
        sock.close()
    first = got.split(b"\r\n", 1)[0].decode("latin-1") if got else "closed"
    body = got.split(b"\r\n\r\n", 1)[1][:200].decode("latin-1") if b"\r\n\r\n" in got else ""
    print(json.dumps({"first": first, "body": body, "seconds": round(time.monotonic() - started, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["session", "ws", "pipeline", "raw"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("arg", nargs="?", default="")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--big-header", type=int, default=0, help="raw: add a header of this many bytes")
    args = parser.parse_args()
    if args.mode == "session":
        session(args.host, args.port)
    elif args.mode == "ws":
        websocket(args.host, args.port, int(args.arg))
    elif args.mode == "pipeline":
        pipeline(args.host, args.port, int(args.arg))
    else:
        data = bytes.fromhex(args.arg)
        if args.big_header:  # too large for an argument: made here
            data = data.replace(b"\r\n\r\n", b"\r\nX-Big: " + b"a" * args.big_header + b"\r\n\r\n", 1)
        raw(args.host, args.port, data, args.pause)


if __name__ == "__main__":
    main()
