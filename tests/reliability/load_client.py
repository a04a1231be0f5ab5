"""The bounded load of the reliability suite, run inside a pod (`meshlet lab exec POD -- python -m ...`).

python -m tests.reliability.load_client HOST PORT --stop-file PATH --ready-file PATH [--interval S]
    [--max-seconds S] [--download-bytes N --download-rate BYTES_PER_S]

Three things at once, until the stop file appears and the download has ended (or --max-seconds pass: the
load is bounded either way):
- a loop of short requests, each on a new TCP connection (`Connection: close`), one every `--interval`
  seconds (or right after the previous one when that took longer): what a user's new connections meet;
- one keep-alive connection that answers one request at the start, then stays idle; at the end the client
  asks a second request on that same socket: did the idle connection survive what happened meanwhile?
- optionally one long download (`/bytes?n=N`), read at a steady rate with a small receive buffer, so that
  the connection stays open that long (curl's `--limit-rate` here lets bursts through, 7.88 ran 3x over it).

The ready file is written once the first short request and the idle connection's first request succeeded
(and the download's answer began), so the test starts the disruption on a working mesh; it then holds the
count of requests made, updated as they go. Prints one JSON line: counts, the first errors, when the
failures happened (seconds since the start), the slowest request, and what became of the idle connection and
the download.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REQUEST_TIMEOUT = 5.0
"""A request that takes longer counts as failed: a user's client would have given up."""
KEPT_ERRORS = 5
DOWNLOAD_BUFFER = 16384
PROGRESS_EVERY = 10
"""Requests between two updates of the ready file (it holds the count of requests made)."""
SLOW = 1.0
"""Seconds after which a request that succeeded still counts as slow (reported, not failed)."""


@dataclass
class Outcome:
    requests: int = 0
    failed: int = 0
    slow: int = 0
    slowest_ms: float = 0.0
    first_failure_s: float | None = None
    last_failure_s: float | None = None
    errors: list[str] = field(default_factory=list)
    idle_reused: bool = False
    idle_error: str | None = None
    download_received: int = 0
    download_kept: bool | None = None
    """Every byte of the download arrived on its one connection (None: no download asked)."""
    download_error: str | None = None
    download_seconds: float = 0.0
    seconds: float = 0.0


def request(sock: socket.socket, host: str, keep_alive: bool) -> None:
    """One GET on `sock`, its answer read in full; raises unless the answer is a 200."""
    connection = "keep-alive" if keep_alive else "close"
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes of the answer's head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answered {status.decode(errors='replace')!r}")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), None)  # fmt: skip
    if length is None:
        raise ConnectionError("no Content-Length: cannot tell where the answer ends")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(body)} of {length} body bytes")
        body += chunk


def progress(path: Path, requests: int) -> None:
    """Tell the test how many requests were made so far (it waits for the load to go on past an event)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{requests}\n")
    tmp.replace(path)


class Download(threading.Thread):
    """GET /bytes?n=SIZE, read at `rate` bytes a second: a long-lived connection that stays busy."""

    def __init__(self, host: str, port: int, size: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.size, self.rate = host, port, size, rate
        self.started_body = threading.Event()
        self.received = 0
        self.error: str | None = None
        self.seconds = 0.0

    def run(self) -> None:
        begun = time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # A small window before connecting: the sender cannot run far ahead of our steady reads.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DOWNLOAD_BUFFER)
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect((self.host, self.port))
            sock.sendall(
                f"GET /bytes?n={self.size} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(DOWNLOAD_BUFFER)
                if not chunk:
                    raise ConnectionError("closed before the answer's head")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(f"answered {head[:40]!r}")
            self.received = len(body)
            self.started_body.set()
            reading = time.monotonic()
            while self.received < self.size:
                ahead = self.received / self.rate - (time.monotonic() - reading)
                if ahead > 0:
                    time.sleep(ahead)
                chunk = sock.recv(min(DOWNLOAD_BUFFER, self.size - self.received))
                if not chunk:
                    raise ConnectionError(f"closed after {self.received} of {self.size} bytes")
                self.received += len(chunk)
        except (OSError, ConnectionError) as exc:
            self.error = repr(exc)
        finally:
            sock.close()
            self.seconds = round(time.monotonic() - begun, 2)
            self.started_body.set()  # (also when it failed: nobody waits for a start that never comes)


def short_request(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=REQUEST_TIMEOUT) as sock:
        sock.settimeout(REQUEST_TIMEOUT)
        request(sock, host, keep_alive=False)


def run(args: argparse.Namespace) -> Outcome:
    out = Outcome()
    started = time.monotonic()
    stop = Path(args.stop_file)
    download = Download(args.host, args.port, args.download_bytes, args.download_rate) if args.download_bytes else None
    idle = socket.create_connection((args.host, args.port), timeout=REQUEST_TIMEOUT)
    idle.settimeout(REQUEST_TIMEOUT)
    ready = announced = False
    try:
        request(idle, args.host, keep_alive=True)
        if download is not None:
            download.start()
            download.started_body.wait(REQUEST_TIMEOUT * 2)
        while time.monotonic() - started < args.max_seconds:
            if stop.exists() and (download is None or not download.is_alive()):
                break
            begun = time.monotonic()
            out.requests += 1
            try:
                short_request(args.host, args.port)
            except (OSError, ConnectionError) as exc:
                out.failed += 1
                at = round(begun - started, 2)
                out.first_failure_s = at if out.first_failure_s is None else out.first_failure_s
                out.last_failure_s = at
                if len(out.errors) < KEPT_ERRORS:
                    out.errors.append(f"{at}s: {exc!r}")
            else:
                took = time.monotonic() - begun
                out.slowest_ms = max(out.slowest_ms, round(took * 1000, 1))
                out.slow += took > SLOW
                ready = True  # the mesh works: the test may begin its disruption now
            if ready and (not announced or out.requests % PROGRESS_EVERY == 0):
                progress(Path(args.ready_file), out.requests)
                announced = True
            time.sleep(max(0.0, args.interval - (time.monotonic() - begun)))
        try:
            request(idle, args.host, keep_alive=True)  # the same socket: no reconnect can hide a cut
            out.idle_reused = True
        except (OSError, ConnectionError) as exc:
            out.idle_error = repr(exc)
    finally:
        idle.close()
    if download is not None:
        download.join(REQUEST_TIMEOUT)  # it has ended unless --max-seconds cut the load short
        out.download_received, out.download_error, out.download_seconds = (
            download.received, download.error, download.seconds)  # fmt: skip
        out.download_kept = download.received == download.size and download.error is None
    out.seconds = round(time.monotonic() - started, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.load_client")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--stop-file", required=True, help="the load stops once this file exists")
    p.add_argument("--ready-file", required=True, help="written once the first requests succeeded")
    p.add_argument("--interval", type=float, default=0.03, help="seconds between the starts of short requests")
    p.add_argument("--max-seconds", type=float, default=60.0, help="the load stops after this long in any case")
    p.add_argument("--download-bytes", type=int, default=0, help="size of the long download (0: none)")
    p.add_argument("--download-rate", type=float, default=512 * 1024, help="bytes a second the download is read at")
    print(json.dumps(asdict(run(p.parse_args(argv)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
