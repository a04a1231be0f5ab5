"""Open N TCP connections to a server, prove each one works, hold them idle, close on request.

Run inside the client pod's netns (`meshlet lab exec web-1a -- python hold.py ...`), stdlib only, so
any Python runs it. Each connection is opened and carries one HTTP/1.1 keep-alive request whose full
response must arrive (so a proxy in the path really connected it end to end); then it sits idle.

Protocol with the caller (one JSON object per line on stdout):
  1. {"phase": "open", "count", "answered", "held", "errors", "seconds"} once every connection
     has been answered, failed or timed out;
  2. the caller measures what it wants, then writes a line (or closes) stdin;
  3. {"phase": "closed", "held", "errors"}: connections still open at that moment (checked without
     reading: a peer that closed or reset is seen), then every socket is closed and the script exits.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time
from collections import Counter
from typing import cast

_CONNECTING, _SENT = 1, 2


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one, and the hard one too when root and not enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            pass  # not root: the soft limit goes as high as the hard one allows, failures are counted
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard if hard != resource.RLIM_INFINITY else needed


def _error_kind(exc: BaseException | int) -> str:
    code = exc if isinstance(exc, int) else getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


def _response_done(buf: bytes) -> tuple[bool, int]:
    """(complete, status) for an HTTP/1.1 response with Content-Length read so far; status 0 until known."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False, 0
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    length = 0
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return len(buf) >= end + 4 + length, status


def open_all(
    host: str, port: int, count: int, path: str, window: int, timeout: float, stall: float
) -> tuple[list[socket.socket], Counter[str]]:
    """Open `count` connections, at most `window` in progress at once; each must answer one request.

    Gives up after `timeout` seconds, or after `stall` seconds in which no connection was answered or
    failed (a proxy at its connection limit queues the rest unanswered: waiting longer shows nothing).
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    held: list[socket.socket] = []
    errors: Counter[str] = Counter()
    buffers: dict[socket.socket, bytes] = {}
    started = 0
    deadline = time.monotonic() + timeout
    progress = [time.monotonic()]  # when a connection was last answered or failed

    def fail(sock: socket.socket, kind: str) -> None:
        sel.unregister(sock)
        buffers.pop(sock, None)
        sock.close()
        errors[kind] += 1
        progress[0] = time.monotonic()

    def going() -> bool:
        now = time.monotonic()
        return (started < count or bool(sel.get_map())) and now < deadline and now - progress[0] < stall

    while going():
        while started < count and len(sel.get_map()) < window:
            started += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            rc = sock.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                sock.close()
                errors[_error_kind(rc)] += 1
                continue
            sel.register(sock, selectors.EVENT_WRITE, _CONNECTING)
        for key, _ in sel.select(timeout=0.5):
            sock = cast(socket.socket, key.fileobj)
            if key.data == _CONNECTING:
                rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc:
                    fail(sock, _error_kind(rc))
                    continue
                try:
                    sock.send(request)  # a few dozen bytes: fits any fresh send buffer at once
                except OSError as exc:
                    fail(sock, _error_kind(exc))
                    continue
                buffers[sock] = b""
                sel.modify(sock, selectors.EVENT_READ, _SENT)
                continue
            try:
                chunk = sock.recv(65536)
            except OSError as exc:
                fail(sock, _error_kind(exc))
                continue
            if not chunk:
                fail(sock, "closed by peer")
                continue
            buffers[sock] += chunk
            done, status = _response_done(buffers[sock])
            if status and status != 200:
                fail(sock, f"HTTP {status}")
            elif done:
                sel.unregister(sock)
                del buffers[sock]
                held.append(sock)
                progress[0] = time.monotonic()
    for key in list(sel.get_map().values()):
        fail(cast(socket.socket, key.fileobj), "timeout")
    errors["timeout"] += count - started
    sel.close()
    return held, +errors


def still_open(held: list[socket.socket]) -> tuple[int, Counter[str]]:
    """Count connections the peer has not closed or reset, without consuming any data."""
    alive = 0
    errors: Counter[str] = Counter()
    for sock in held:
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            alive += 1
            continue
        except OSError as exc:
            errors[_error_kind(exc)] += 1
            continue
        if data:
            errors["unexpected data"] += 1
        else:
            errors["closed by peer"] += 1
    return alive, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--path", default="/1k", help="the request each connection makes once")
    parser.add_argument("--window", type=int, default=256, help="connections in progress at once")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for all to open and answer")
    parser.add_argument("--stall", type=float, default=10.0, help="give up after this long without progress")
    args = parser.parse_args()

    raise_nofile(args.count + 64)
    t0 = time.monotonic()
    held, errors = open_all(args.host, args.port, args.count, args.path, args.window, args.timeout, args.stall)
    alive, lost = still_open(held)
    report = {
        "phase": "open",
        "count": args.count,
        "answered": len(held),
        "held": alive,
        "errors": dict(errors + lost),
        "seconds": round(time.monotonic() - t0, 3),
    }
    print(json.dumps(report), flush=True)
    sys.stdin.readline()
    alive, lost = still_open(held)
    print(json.dumps({"phase": "closed", "held": alive, "errors": dict(lost)}), flush=True)
    for sock in held:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
