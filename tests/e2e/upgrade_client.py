"""The bounded load of the upgrade test, run inside a pod (`meshlet lab exec POD -- python -m ...`).

python -m tests.e2e.upgrade_client HOST PORT --stop-file PATH --count-file PATH [--interval S] [--max-seconds S]

Until the stop file appears (or --max-seconds pass): one short request every `--interval` seconds, each on a
new connection (what a user's new connections meet), and one keep-alive connection asked once at the start
and once at the end on the same socket (did the idle connection survive?). The count file holds the number
of requests made so far. Prints one JSON line: requests, failed, the first errors, idle_reused.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path

TIMEOUT = 5.0


def get(sock: socket.socket, host: str, keep_alive: bool) -> None:
    """One GET on `sock`, its whole answer read; raises unless it is a 200."""
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes of the head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answered {head.splitlines()[0]!r}")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(body)} of {length} body bytes")
        body += chunk


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--stop-file", type=Path, required=True)
    p.add_argument("--count-file", type=Path, required=True)
    p.add_argument("--interval", type=float, default=0.03)
    p.add_argument("--max-seconds", type=float, default=90.0)
    args = p.parse_args()
    out: dict[str, object] = {"requests": 0, "failed": 0, "errors": [], "idle_reused": False, "idle_error": None}
    errors: list[str] = []
    started = time.monotonic()
    idle = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
    with idle:
        get(idle, args.host, keep_alive=True)
        requests = failed = 0
        while not args.stop_file.exists() and time.monotonic() - started < args.max_seconds:
            begun = time.monotonic()
            requests += 1
            try:
                with socket.create_connection((args.host, args.port), timeout=TIMEOUT) as sock:
                    sock.settimeout(TIMEOUT)
                    get(sock, args.host, keep_alive=False)
            except (OSError, ConnectionError, StopIteration) as exc:
                failed += 1
                if len(errors) < 5:
                    errors.append(f"{begun - started:.2f}s: {exc!r}")
            tmp = args.count_file.with_suffix(".tmp")
            tmp.write_text(str(requests))
            tmp.replace(args.count_file)
            time.sleep(max(0.0, args.interval - (time.monotonic() - begun)))
        try:
            get(idle, args.host, keep_alive=True)
            out["idle_reused"] = True
        except (OSError, ConnectionError, StopIteration) as exc:
            out["idle_error"] = repr(exc)
    out.update(requests=requests, failed=failed, errors=errors)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
