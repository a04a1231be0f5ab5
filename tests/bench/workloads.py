"""The workloads (wrk and curl command lines) and the parsing of what they print.

Parsing is pure (text in, numbers out) so it is unit-tested without a lab (tests/unit/bench).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class WorkloadError(Exception):
    """A client's output could not be read as a result (it failed, or printed something unexpected)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    """Responses completed in the run."""
    seconds: float
    """The run's duration as wrk measured it."""
    rps: float
    """Requests/sec."""
    p50_ms: float | None
    """Median latency (None without --latency)."""
    p99_ms: float | None
    """99th percentile latency."""
    errors: dict[str, int] = field(default_factory=dict)
    """Socket errors by kind (connect, read, write, timeout) and non-2xx/3xx responses, only those not zero."""


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def duration_ms(value: str, unit: str) -> float:
    """wrk's '87.00', 'us' -> 0.087 (milliseconds)."""
    try:
        return float(value) * _UNITS_MS[unit]
    except (KeyError, ValueError) as exc:
        raise WorkloadError(f"not a wrk duration: {value}{unit}") from exc


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's report (with --latency): totals, Requests/sec, 50% and 99% latency, errors."""
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    if rps is None or total is None:
        raise WorkloadError("no 'Requests/sec' in wrk's output: " + (text.strip()[-300:] or "(empty)"))
    latency = {m.group(1): duration_ms(m.group(2), m.group(3)) for m in _LATENCY.finditer(text)}
    errors: dict[str, int] = {}
    sock = _SOCKET_ERRORS.search(text)
    if sock:
        for kind, count in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True):
            if int(count):
                errors[kind] = int(count)
    non2xx = _NON_2XX.search(text)
    if non2xx and int(non2xx.group(1)):
        errors["non-2xx/3xx"] = int(non2xx.group(1))
    requests = int(total.group(1))
    return WrkResult(
        requests=requests,
        seconds=duration_ms(total.group(2), total.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        # wrk prints 0.00us percentiles when nothing completed: no latency is not zero latency
        p50_ms=latency.get("50") if requests else None,
        p99_ms=latency.get("99") if requests else None,
        errors=errors,
    )


def wrk_argv(url: str, connections: int, seconds: float, *, close: bool = False) -> list[str]:
    """wrk with one thread per 8 connections (at most 2: this machine's cores), fixed duration, latency."""
    threads = max(1, min(2, connections // 8))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]  # every request on a new connection: connections/s
    return [*argv, url]


@dataclass(frozen=True, slots=True)
class BulkResult:
    """One download over one connection."""

    gbit_per_s: float
    bytes: int
    status: int


_CURL_FORMAT = "%{http_code} %{size_download} %{speed_download}"


def curl_bulk_argv(url: str, max_seconds: float = 120.0) -> list[str]:
    """curl downloading to /dev/null over one connection, printing status, size and bytes/s."""
    return ["curl", "-s", "-o", "/dev/null", "--max-time", f"{max_seconds:g}", "-w", _CURL_FORMAT, url]


def parse_curl_bulk(text: str, expected_bytes: int) -> BulkResult:
    """Read `status size bytes_per_s`; a short or failed download is an error, not a slow result."""
    parts = text.split()
    try:
        status, size, speed = int(parts[0]), int(float(parts[1])), float(parts[2])
    except (IndexError, ValueError) as exc:
        raise WorkloadError(f"unexpected curl output: {text.strip()[:200] or '(empty)'}") from exc
    if status != 200 or size != expected_bytes:
        raise WorkloadError(f"download failed: HTTP {status}, {size} of {expected_bytes} bytes")
    return BulkResult(gbit_per_s=speed * 8 / 1e9, bytes=size, status=status)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
