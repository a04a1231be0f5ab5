"""Measure one scenario: the same workloads over one path (direct, the HAProxy pair, meshlet).

A scenario is a client pod, the address it calls and the node proxies on the way (none for direct).
Every workload runs in the client pod's netns through `meshlet lab exec`; the proxies' CPU time is read
before and after each wrk run, their RSS when idle and while holding many open idle connections. For
meshlet, the requests each ztunnel counted (`istio_requests_total` by reporter: only L7 counts) during
the wrk runs show which path served them: E's and G's on both reporters, none for C and D; and for E and G
the source side's count by destination_service shows where the route sent them (G: the two backends).
Results are plain JSON-ready dicts (report.py reads them by key).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import nginx
from tests.bench.lab import BenchError, Lab, cpu_us, requests_by_destination, requests_by_reporter, rss_kb
from tests.bench.workloads import WorkloadError, curl_bulk_argv, median, parse_curl_bulk, parse_wrk, wrk_argv

HOLD_SCRIPT = Path(__file__).with_name("hold.py")

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Scenario:
    """What to measure: who calls where, through which node proxies."""

    key: str
    """A to G (report.SCENARIOS)."""
    title: str
    client: str
    """The pod the clients run in."""
    host: str
    port: int
    proxies: dict[str, int]
    """{node: PID} of the node proxies on the path; empty when there are none."""

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


@dataclass(frozen=True, slots=True)
class Settings:
    """How long and how much each workload runs."""

    duration: float
    """Seconds per wrk run."""
    bulk_runs: int
    """100 MB downloads per scenario (the median is reported)."""
    hold: int
    """Idle connections for the per-connection RSS (1,000)."""
    hold_max: int
    """Idle connections for the concurrency check (10,000)."""


def _rss(sc: Scenario) -> dict[str, int]:
    return {node: rss_kb(pid) for node, pid in sc.proxies.items()}


def _cpu(sc: Scenario) -> dict[str, float]:
    return {node: cpu_us(pid) for node, pid in sc.proxies.items()}


def ready(lab: Lab, sc: Scenario) -> None:
    """Wait until the path answers end to end (servers, proxies, certificates, redirection in place)."""
    argv = ["curl", "-sS", "-f", "-o", "/dev/null", "--max-time", "5", "--retry", "15", "--retry-delay", "1"]
    proc = lab.exec(sc.client, [*argv, "--retry-all-errors", sc.url(nginx.SMALL_PATH)], timeout=120)
    if proc.returncode != 0:
        raise BenchError(f"{sc.url(nginx.SMALL_PATH)} does not answer from {sc.client}: {proc.stderr.strip()[-300:]}")


def run_wrk(lab: Lab, sc: Scenario, connections: int, seconds: float, *, close: bool = False) -> dict[str, Any]:
    """One wrk run; with the proxies' CPU time spent during it, in total and per completed request."""
    before = _cpu(sc)
    proc = lab.exec(sc.client, wrk_argv(sc.url(nginx.SMALL_PATH), connections, seconds, close=close), seconds + 60)
    spent = {node: us - before[node] for node, us in _cpu(sc).items()}
    try:
        res = parse_wrk(proc.stdout)
    except WorkloadError as exc:
        raise WorkloadError(f"wrk -c{connections} from {sc.client}: {exc} {proc.stderr.strip()[-200:]}") from exc
    return {
        "connections": connections,
        "close": close,
        "requests": res.requests,
        "seconds": res.seconds,
        "rps": res.rps,
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "errors": res.errors,
        "proxy_cpu_us": spent,
        "proxy_cpu_us_per_request": sum(spent.values()) / res.requests if spent and res.requests else None,
    }


def run_bulk(lab: Lab, sc: Scenario, runs: int) -> dict[str, Any]:
    """Download the 100 MB file over one connection `runs` times; the median speed counts."""
    speeds = []
    for _ in range(runs):
        proc = lab.exec(sc.client, curl_bulk_argv(sc.url(nginx.BULK_PATH)), timeout=180)
        speeds.append(parse_curl_bulk(proc.stdout, nginx.BULK_BYTES).gbit_per_s)
    return {"bytes": nginx.BULK_BYTES, "runs_gbit_per_s": speeds, "gbit_per_s": median(speeds)}


def _read_line(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # hold.py bounds its own time (--timeout), then always prints or exits
    if not line:
        proc.wait(10)
        raise BenchError(f"{what} ended without a report (exit code {proc.returncode})")
    report: dict[str, Any] = json.loads(line)
    return report


def run_hold(lab: Lab, sc: Scenario, count: int, settle: float = 1.0) -> dict[str, Any]:
    """Open `count` connections (each answers one request), hold them idle, read the proxies' RSS."""
    before = _rss(sc)
    argv = [sys.executable, str(HOLD_SCRIPT), "--host", sc.host, "--port", str(sc.port), "--count", str(count)]
    argv += ["--path", nginx.SMALL_PATH]
    proc = lab.spawn(sc.client, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        opened = _read_line(proc, f"hold.py ({count} connections)")
        time.sleep(settle)  # let the proxies finish whatever the last connections started
        during = _rss(sc)
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        closed = _read_line(proc, f"hold.py ({count} connections)")
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    held = int(closed["held"])
    errors = dict(opened["errors"])
    for kind, n in closed["errors"].items():
        errors[f"dropped: {kind}"] = errors.get(f"dropped: {kind}", 0) + n
    per_conn = {node: (during[node] - before[node]) / held for node in during} if held else {}
    return {
        "count": count,
        "answered": opened["answered"],
        "held": held,
        "errors": errors,
        "open_seconds": opened["seconds"],
        "rss_before_kb": before,
        "rss_with_kb": during,
        "kb_per_connection": per_conn,
        "kb_per_connection_total": sum(per_conn.values()) if per_conn else None,
    }


MESHLET, ROUTED = "CDEG", "EG"
"""Scenarios whose node proxies are ztunnels (they serve istio_requests_total); those through a Service at L7."""


Counts = dict[str, dict[str, float]]
"""{node: {label value: requests}}."""


def _l7_requests(lab: Lab, sc: Scenario) -> tuple[Counts | None, Counts | None]:
    """({node: {reporter: requests}}, {node: {destination_service: requests at the source}}) of the ztunnels on
    the path; None (each) without ztunnels or when a scrape fails, the second also outside ROUTED."""
    if not sc.proxies or sc.key not in MESHLET:
        return None, None
    try:
        texts = {node: lab.metrics(node) for node in sc.proxies}
    except BenchError:
        return None, None
    by_reporter = {node: requests_by_reporter(text) for node, text in texts.items()}
    if sc.key not in ROUTED:
        return by_reporter, None
    return by_reporter, {node: requests_by_destination(text) for node, text in texts.items()}


def l7_delta(before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None) -> Any:
    """{node: {reporter: requests counted between the two scrapes}}, None when either is missing."""
    if before is None or after is None:
        return None
    return {
        node: {rep: n - before.get(node, {}).get(rep, 0.0) for rep, n in sorted(counts.items())}
        for node, counts in after.items()
    }


def measure(lab: Lab, sc: Scenario, settings: Settings, say: Say) -> dict[str, Any]:
    """Every workload once, in a fixed order (load first, then the held connections)."""
    started = time.monotonic()
    result: dict[str, Any] = {"title": sc.title, "client": sc.client, "url": sc.url(""), "proxies": dict(sc.proxies)}
    ready(lab, sc)
    result["rss_idle_kb"] = _rss(sc)
    counted, routed = _l7_requests(lab, sc)
    say(f"{sc.key}: warm-up")
    warm = run_wrk(lab, sc, 16, 1.0)
    say(f"{sc.key}: wrk c=1, {settings.duration:g}s")
    result["c1"] = run_wrk(lab, sc, 1, settings.duration)
    say(f"{sc.key}: wrk c=4, {settings.duration:g}s")
    result["c4"] = run_wrk(lab, sc, 4, settings.duration)
    say(f"{sc.key}: wrk c=16, {settings.duration:g}s")
    result["c16"] = run_wrk(lab, sc, 16, settings.duration)
    if counted is not None:
        counted_after, routed_after = _l7_requests(lab, sc)
        result["l7_requests"] = {
            "wrk_requests": sum(r["requests"] for r in (warm, result["c1"], result["c4"], result["c16"])),
            "by_node_and_reporter": l7_delta(counted, counted_after),
        }
        if sc.key in ROUTED:
            result["l7_requests"]["by_node_and_destination_service"] = l7_delta(routed, routed_after)
        say(f"{sc.key}: requests seen at L7 (istio_requests_total) during wrk: {result['l7_requests']}")
    say(f"{sc.key}: new connections (Connection: close), c=16, {settings.duration:g}s")
    result["new_connections"] = run_wrk(lab, sc, 16, settings.duration, close=True)
    say(f"{sc.key}: bulk, 100 MB x {settings.bulk_runs} over one connection")
    result["bulk"] = run_bulk(lab, sc, settings.bulk_runs)
    for key, count in (("hold", settings.hold), ("hold_max", settings.hold_max)):
        say(f"{sc.key}: {count:,} idle connections")
        result[key] = run_hold(lab, sc, count)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result
