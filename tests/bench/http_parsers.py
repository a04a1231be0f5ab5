"""HTTP/1.1 parse cost of httptools (llhttp, C) against h11 (pure Python), on the traffic a node proxy sees.

`python -m tests.bench.http_parsers [--count N] [--repeats R]` prints a table; `bash .ci/bench` runs it
too and puts the rows in latest.json (`http_parsers`). Issue #14 asks for the L7 proxy's parser to be
picked by this measurement.

Cases, in both directions: a GET with 8 headers; 16 such GETs pipelined in one read; 200 responses with
a Content-Length body of 1 KiB and 64 KiB; a chunked 200 response (16 chunks of 1 KiB). The bytes come in
reads of at most 64 KiB, split before timing. Each parser does what a proxy needs from it: every header
name and value, every body piece and the end of each message, over one keep-alive connection.

What differs, because the libraries differ (say it when quoting the figures):
- httptools: one parser per connection, reused message after message (llhttp resets itself).
- h11: a `Connection` is a state machine for both directions and will not read the next message until
  the current exchange is complete: for requests it must send a response (an empty 204) and start the
  next cycle; for responses it must first send the request. That protocol cost is part of its figure,
  as it would be in a proxy built on it; the setup-only cost is printed beside it.
Timing: time.perf_counter over a fixed count of messages, several repetitions, the median reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import httptools

READ_SIZE = 64 * 1024
PIPELINE = 16
PARSERS = ("httptools", "h11")

_REQUEST = (
    b"GET /api/v1/orders/12345?expand=items HTTP/1.1\r\n"
    b"Host: orders.shop.svc.cluster.local\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: session=4f2c9a1be0d34c7f8a6e5b2d1c0f9e8d; theme=dark\r\n"
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    b"x-request-id: 9b2e6c1a-3f4d-4e5a-8b7c-6d5e4f3a2b1c\r\n"
    b"\r\n"
)


def _response(body_len: int) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Server: nginx/1.22.1\r\n"
        b"Date: Sat, 28 Nov 2026 21:00:00 GMT\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: keep-alive\r\n"
        b"Cache-Control: no-cache\r\n"
        b"\r\n" % body_len
    )
    return head + bytes(body_len)


def _chunked(chunks: int, size: int) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Server: nginx/1.22.1\r\n"
        b"Date: Sat, 28 Nov 2026 21:00:00 GMT\r\n"
        b"Content-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"Connection: keep-alive\r\n"
        b"\r\n"
    )
    chunk = b"%x\r\n" % size + bytes(size) + b"\r\n"
    return head + chunk * chunks + b"0\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Case:
    """One kind of traffic: the bytes of one unit (a message, or a pipelined batch) and how many messages."""

    name: str
    direction: str
    """'request' or 'response': which parser reads it."""
    data: bytes
    messages: int
    """Messages in `data` (PIPELINE for the pipelined batch)."""
    count_divisor: int = 1
    """Large cases run count // divisor units (messages), so every case takes a similar time."""


CASES = (
    Case("GET, 8 headers", "request", _REQUEST, 1),
    Case(f"GET x{PIPELINE} pipelined", "request", _REQUEST * PIPELINE, PIPELINE),
    Case("200, 1 KiB body", "response", _response(1024), 1),
    Case("200, 64 KiB body", "response", _response(64 * 1024), 1, 8),
    Case("200, chunked 16x1 KiB", "response", _chunked(16, 1024), 1, 4),
)


def _reads(data: bytes) -> list[bytes]:
    return [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]


class _Sink:
    """httptools' callbacks: keep what a proxy keeps (target, header pairs, body size, completed messages)."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = 0
        self.done = 0

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.done += 1
        self.headers = []


def _httptools_run(case: Case, units: int) -> Callable[[], int]:
    sink = _Sink()
    parser: Any = (httptools.HttpRequestParser if case.direction == "request" else httptools.HttpResponseParser)(sink)
    reads = _reads(case.data)

    def run() -> int:
        before = sink.done
        for _ in range(units):
            for chunk in reads:
                parser.feed_data(chunk)
        return sink.done - before

    return run


_H11_REQUEST = h11.Request(method="GET", target="/api/v1/orders/12345", headers=[("Host", "orders")])
_H11_RESPONSE = h11.Response(status_code=204, headers=[])


def _h11_take(conn: h11.Connection) -> int:
    """Events until the end of one message; returns the body bytes seen."""
    body = 0
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return body
        elif event is h11.NEED_DATA or event is h11.PAUSED:
            raise RuntimeError(f"h11 stopped at {event!r} inside a complete message")


def _h11_run(case: Case, units: int) -> Callable[[], int]:
    reads = _reads(case.data)

    def requests() -> int:
        done = 0
        for _ in range(units):
            conn = h11.Connection(h11.SERVER)  # one connection per unit: its buffer starts empty every time
            for chunk in reads:
                conn.receive_data(chunk)
            for _ in range(case.messages):
                _h11_take(conn)
                conn.send(_H11_RESPONSE)  # h11 reads the next pipelined request only after the response
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
                done += 1
        return done

    def responses() -> int:
        done = 0
        for _ in range(units):
            conn = h11.Connection(h11.CLIENT)
            conn.send(_H11_REQUEST)  # a client connection reads a response only after sending a request
            conn.send(h11.EndOfMessage())
            for chunk in reads:
                conn.receive_data(chunk)
            _h11_take(conn)
            done += 1
        return done

    return requests if case.direction == "request" else responses


def _h11_setup(case: Case, units: int) -> Callable[[], int]:
    """The h11 protocol work without any parsing: a new connection and the sends its state machine needs."""

    def run() -> int:
        for _ in range(units):
            conn = h11.Connection(h11.SERVER if case.direction == "request" else h11.CLIENT)
            if case.direction == "response":
                conn.send(_H11_REQUEST)
                conn.send(h11.EndOfMessage())
        return units

    return run


_MAKERS: dict[str, Callable[[Case, int], Callable[[], int]]] = {"httptools": _httptools_run, "h11": _h11_run}


def _time(run: Callable[[], int], expected: int, repeats: int) -> float:
    """Median seconds of `repeats` runs; each must complete `expected` messages."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = run()
        times.append(time.perf_counter() - t0)
        if done < expected:
            raise RuntimeError(f"parsed {done} messages of {expected}")
    return statistics.median(times)


def measure(count: int = 20000, repeats: int = 5) -> list[dict[str, Any]]:
    """One row per case and parser: median ns per message and MB/s (10^6 bytes of wire data per second)."""
    rows = []
    for case in CASES:
        units = max(1, count // case.count_divisor // case.messages)
        messages = units * case.messages
        setup_ns = _time(_h11_setup(case, units), units, repeats) * 1e9 / messages
        for name in PARSERS:
            run = _MAKERS[name](case, units)
            _time(run, messages, 1)  # warm-up, and a parser that misses messages fails here
            seconds = _time(run, messages, repeats)
            rows.append(
                {
                    "case": case.name,
                    "direction": case.direction,
                    "parser": name,
                    "message_bytes": len(case.data) // case.messages,
                    "messages": messages,
                    "repeats": repeats,
                    "ns_per_message": seconds * 1e9 / messages,
                    "mb_per_s": len(case.data) * units / seconds / 1e6,
                    "h11_setup_ns_per_message": setup_ns if name == "h11" else None,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Plain text: one line per case, both parsers side by side, and h11 over httptools."""
    by = {(r["case"], r["parser"]): r for r in rows}
    lines = [
        f"{'case':<24} {'bytes/msg':>9}  {'httptools ns/msg':>16} {'MB/s':>7}  {'h11 ns/msg':>10} {'MB/s':>7}"
        f"  {'h11/httptools':>13}  {'h11 setup ns':>12}"
    ]
    for case in dict.fromkeys(r["case"] for r in rows):
        a, b = by[(case, "httptools")], by[(case, "h11")]
        lines.append(
            f"{case:<24} {a['message_bytes']:>9,}  {a['ns_per_message']:>16,.0f} {a['mb_per_s']:>7,.0f}"
            f"  {b['ns_per_message']:>10,.0f} {b['mb_per_s']:>7,.0f}"
            f"  {b['ns_per_message'] / a['ns_per_message']:>12.1f}x  {b['h11_setup_ns_per_message']:>12,.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.http_parsers", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20000, help="messages per small case and repetition (default 20000)")
    p.add_argument("--repeats", type=int, default=5, help="repetitions; the median counts (default 5)")
    args = p.parse_args(argv)
    if args.count < 1 or args.repeats < 1:
        p.error("--count and --repeats must be at least 1")
    print(
        f"httptools {httptools.__version__} (llhttp) vs h11 {h11.__version__}, Python {sys.version.split()[0]}; "
        f"median of {args.repeats} runs"
    )
    print(table(measure(args.count, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
