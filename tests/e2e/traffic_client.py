"""Load the traffic-management e2e tests generate from inside a pod (run through `meshlet lab exec`, so that the
pod's capture applies): keep-alive connections driven from Python, not one curl process per request, so that a
few thousand requests take seconds on a small machine.

- `load HOST PORT -n N -c C [--path P] [-H NAME:VALUE]... [--key-header NAME --keys K]`: N requests over C
  keep-alive connections, all connected before the first request is sent (so "immediate" requests are); `{i}` in
  P is the request's index; with `--key-header`, request i carries NAME: k<i mod K>. Prints one JSON object:
  {"seconds", "results": [{"i", "status", "pod", "ms", "error", "key", "headers", "body"}]}, where status 0 is a
  connection error (then `error` says which; the connection is made again for the next request).
- `stream HOST PORT --seconds S [--path P] [--gap G]`: requests one after another on one connection for S
  seconds (G seconds apart), one JSON line per answer as it comes: {"t" (time.time()), "status", "pod"}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from typing import Any

TIMEOUT = 10.0
KEPT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-envoy-overloaded")


class Worker:
    """One keep-alive connection, made again after a failed request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        conn.connect()
        return conn

    def request(self, path: str, headers: dict[str, str]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            try:
                self.conn = self._connect()
            except OSError:
                pass  # the next request fails as well, and says why
            return {"status": 0, "pod": "", "ms": _ms(started), "error": f"{type(exc).__name__}: {exc}"}
        answer: dict[str, Any] = {"status": response.status, "pod": response.getheader("x-pod", ""),
                                  "ms": _ms(started), "error": ""}  # fmt: skip
        kept = {name: response.getheader(name) for name in KEPT_HEADERS if response.getheader(name) is not None}
        if kept:
            answer["headers"] = kept
        if response.status != 200:
            answer["body"] = body[:200].decode("utf-8", "replace")
        if response.will_close:
            self.conn.close()
            self.conn = self._connect()
        return answer

    def close(self) -> None:
        self.conn.close()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _headers(raw: list[str]) -> dict[str, str]:
    out = {}
    for item in raw:
        name, _, value = item.partition(":")
        out[name.strip()] = value.strip()
    return out


def load(args: argparse.Namespace) -> None:
    headers = _headers(args.header)
    workers = [Worker(args.host, args.port) for _ in range(args.concurrency)]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    next_index = iter(range(args.requests))
    start = threading.Barrier(args.concurrency)

    def run(worker: Worker) -> None:
        start.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            extra = dict(headers)
            key = ""
            if args.key_header:
                key = f"k{i % args.keys}"
                extra[args.key_header] = key
            answer = worker.request(args.path.replace("{i}", str(i)), extra)
            answer.update(i=i, key=key)
            with lock:
                results.append(answer)

    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - began
    for worker in workers:
        worker.close()
    results.sort(key=lambda r: int(r["i"]))
    print(json.dumps({"seconds": round(seconds, 3), "results": results}))


def stream(args: argparse.Namespace) -> None:
    worker = Worker(args.host, args.port)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        answer = worker.request(args.path, {})
        print(json.dumps({"t": time.time(), "status": answer["status"], "pod": answer["pod"]}), flush=True)
        if args.gap:
            time.sleep(args.gap)
    worker.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["load", "stream"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("-n", "--requests", type=int, default=100)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("--path", default="/")
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("--key-header", default="")
    parser.add_argument("--keys", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--gap", type=float, default=0.0)
    args = parser.parse_args()
    if args.mode == "load":
        load(args)
    else:
        stream(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
