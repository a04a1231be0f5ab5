"""From scenario results to the judgement: metric rows, ratios C/B, D/B, C/A, E/F, G/E, targets, the table, JSON.

Nothing absolute passes or fails; a ratio is a scenario's value over another's in the same run. Each
metric says which way is better, so a ratio can be read (and coloured) without knowing the metric.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

SCENARIOS = ("A", "B", "C", "D", "E", "F", "G")
HEADERS = {
    "A": "direct",
    "B": "HAProxy",
    "C": "meshlet",
    "D": "eBPF",
    "E": "L7 eBPF",
    "F": "HAProxy L7",
    "G": "L7 routed",
}
"""Short column names: A direct, B the HAProxy mTLS pair (mode tcp), C meshlet (iptables), D meshlet (eBPF),
E meshlet L7 (eBPF backend, an HTTP service port), F the HAProxy mTLS pair in `mode http`, G E with an HTTPRoute
and TrafficPolicies in force (routing.py)."""
TITLES = {
    "A": "direct",
    "B": "HAProxy mTLS pair",
    "C": "meshlet iptables",
    "D": "meshlet eBPF",
    "E": "meshlet L7 (eBPF)",
    "F": "HAProxy mode http mTLS pair",
    "G": "meshlet L7 (eBPF) + HTTPRoute + TrafficPolicy",
}
"""The scenarios' full names, as the progress lines and the JSON spell them."""
RATIOS = (("C/B", "C", "B"), ("D/B", "D", "B"), ("C/A", "C", "A"), ("E/F", "E", "F"), ("G/E", "G", "E"))
"""(name, numerator, denominator). G/E is what routing costs: the same path with and without the route."""
ADDED_P50_MS = 0.10
"""Issue #18: at c=1, meshlet may add at most 0.10 ms to the direct path's p50 (A)."""
ROUTING_COST = 0.10
"""Issue #15: with an HTTPRoute and a TrafficPolicy in force, a request may cost at most 10% more (G against E)."""

Result = Mapping[str, Any]
"""One scenario's result as scenario.measure returns it."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the table."""

    key: str
    label: str
    """For people; `{hold}` and `{hold_max}` are replaced by the connection counts."""
    better: str
    """'higher' or 'lower': which way is better."""
    get: Callable[[Result], float | None]
    fmt: str = "{:,.1f}"
    chart: bool = True
    """Counts (connections held, errors) are in the table and the JSON but not the chart of ratios."""


def _at(*path: str) -> Callable[[Result], float | None]:
    def get(result: Result) -> float | None:
        node: Any = result
        for key in path:
            if not isinstance(node, Mapping) or node.get(key) is None:
                return None
            node = node[key]
        return float(node)

    return get


def _nodes(
    path: tuple[str, ...], combine: Callable[[list[float]], float], scale: float = 1.0
) -> Callable[[Result], float | None]:
    """A per-node dict ({node: value}) combined into one number; None when there are no node proxies."""

    def get(result: Result) -> float | None:
        node: Any = result
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if not node:
            return None
        return combine([float(v) for v in node.values()]) * scale

    return get


def _error_count(result: Result) -> float | None:
    errors = result.get("hold_max", {}).get("errors")
    return None if errors is None else float(sum(errors.values()))


METRICS: tuple[Metric, ...] = (
    Metric("c1_rps", "c=1 req/s", "higher", _at("c1", "rps"), "{:,.0f}"),
    Metric("c1_p50_ms", "c=1 p50 ms", "lower", _at("c1", "p50_ms"), "{:,.3f}"),
    Metric("c1_p99_ms", "c=1 p99 ms", "lower", _at("c1", "p99_ms"), "{:,.3f}"),
    Metric("c4_rps", "c=4 req/s", "higher", _at("c4", "rps"), "{:,.0f}"),
    Metric("c4_p50_ms", "c=4 p50 ms", "lower", _at("c4", "p50_ms"), "{:,.3f}"),
    Metric("c16_rps", "c=16 req/s", "higher", _at("c16", "rps"), "{:,.0f}"),
    Metric("c16_p50_ms", "c=16 p50 ms", "lower", _at("c16", "p50_ms"), "{:,.3f}"),
    Metric("c16_p99_ms", "c=16 p99 ms", "lower", _at("c16", "p99_ms"), "{:,.3f}"),
    Metric("bulk_gbit_per_s", "bulk Gbit/s (1 connection)", "higher", _at("bulk", "gbit_per_s"), "{:,.2f}"),
    Metric("new_connections_per_s", "new connections/s (c=16)", "higher", _at("new_connections", "rps"), "{:,.0f}"),
    Metric("cpu_us_per_request_c1", "proxy CPU µs/req, c=1", "lower", _at("c1", "proxy_cpu_us_per_request")),
    Metric("cpu_us_per_request_c16", "proxy CPU µs/req, c=16", "lower", _at("c16", "proxy_cpu_us_per_request")),
    Metric(
        "cpu_us_per_new_connection",
        "proxy CPU µs/new conn",
        "lower",
        _at("new_connections", "proxy_cpu_us_per_request"),
    ),
    Metric("rss_idle_mb_node", "proxy RSS idle MB, per node", "lower", _nodes(("rss_idle_kb",), max, 1 / 1024)),
    Metric("rss_idle_mb_total", "proxy RSS idle MB, both", "lower", _nodes(("rss_idle_kb",), sum, 1 / 1024)),
    Metric(
        "kb_per_idle_conn_node",
        "RSS KB per idle conn, per node ({hold})",
        "lower",
        _nodes(("hold", "kb_per_connection"), max),
    ),
    Metric(
        "kb_per_idle_conn_total", "RSS KB per idle conn, both ({hold})", "lower", _at("hold", "kb_per_connection_total")
    ),
    Metric("held_max", "idle conns held (of {hold_max})", "higher", _at("hold_max", "held"), "{:,.0f}", chart=False),
    Metric("held_max_errors", "errors opening/holding {hold_max}", "lower", _error_count, "{:,.0f}", chart=False),
    Metric(
        "rss_held_max_mb_total",
        "proxy RSS MB with {hold_max}, both",
        "lower",
        _nodes(("hold_max", "rss_with_kb"), sum, 1 / 1024),
    ),
)

_BY_KEY = {m.key: m for m in METRICS}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator; None when either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def values(results: Mapping[str, Result | None]) -> dict[str, dict[str, float | None]]:
    """{metric: {scenario: value}}; an unavailable scenario (None) has None everywhere."""
    return {m.key: {s: m.get(r) if (r := results.get(s)) is not None else None for s in SCENARIOS} for m in METRICS}


def ratios(vals: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """{metric: {'C/B': ..., 'D/B': ..., 'C/A': ..., 'E/F': ..., 'G/E': ...}}."""
    return {key: {name: ratio(row.get(a), row.get(b)) for name, a, b in RATIOS} for key, row in vals.items()}


def _target(scenario: str, what: str, value: float | None, unit: str, holds: bool | None) -> dict[str, Any]:
    return {"scenario": scenario, "target": what, "value": value, "unit": unit, "holds": holds}


def targets(
    vals: Mapping[str, Mapping[str, float | None]], rats: Mapping[str, Mapping[str, float | None]], hold_max: int
) -> list[dict[str, Any]]:
    """The issues' targets for meshlet (C, D, E, G when measured); `holds` is None when not measured.

    L4 (C, D) against the HAProxy tcp pair (issue #7, c=4 from #18) and the p50 added over direct at c=1 (#18);
    L7 (E) against the HAProxy http pair (issue #14:
    "E at or above F" on req/s, and CPU per request no higher); routing (G) against E (issue #15: "the
    per-request cost of routing stays under 10%": CPU per request at most 1.10x, req/s at least 1/1.10x)."""
    out = []
    direct_p50 = vals["c1_p50_ms"]["A"]
    for s in ("C", "D"):
        for key in ("c1_rps", "c4_rps", "c16_rps", "bulk_gbit_per_s"):
            r = rats[key][f"{s}/B"]
            out.append(_target(s, f"{_BY_KEY[key].label}: {s}/B >= 1.0", r, "x", None if r is None else r >= 1.0))
        p50 = vals["c1_p50_ms"][s]
        added = None if p50 is None or direct_p50 is None else p50 - direct_p50
        what = f"c=1 p50 added over direct (A) <= {ADDED_P50_MS:.2f} ms"
        out.append(_target(s, what, added, "ms", None if added is None else added <= ADDED_P50_MS))
        v = vals["rss_idle_mb_node"][s]
        out.append(_target(s, "node proxy RSS idle <= 60 MB", v, "MB", None if v is None else v <= 60))
        v = vals["kb_per_idle_conn_node"][s]
        out.append(_target(s, "node proxy RSS <= 16 KB per idle connection", v, "KB", None if v is None else v <= 16))
        held, errors = vals["held_max"][s], vals["held_max_errors"][s]
        ok = None if held is None or errors is None else held == hold_max and errors == 0
        out.append(_target(s, f"{hold_max:,} concurrent connections held without an error", held, "held", ok))
    for key in ("c1_rps", "c16_rps"):
        r = rats[key]["E/F"]
        out.append(_target("E", f"{_BY_KEY[key].label}: E/F >= 1.0", r, "x", None if r is None else r >= 1.0))
    for key in ("cpu_us_per_request_c1", "cpu_us_per_request_c16"):
        r = rats[key]["E/F"]
        out.append(_target("E", f"{_BY_KEY[key].label}: E/F <= 1.0", r, "x", None if r is None else r <= 1.0))
    return out + routing_targets(rats)


def routing_targets(rats: Mapping[str, Mapping[str, float | None]]) -> list[dict[str, Any]]:
    """G/E on req/s and proxy CPU per request at c=1 and c=16: routing's cost per request under ROUTING_COST."""
    out = []
    most, least = 1 + ROUTING_COST, 1 / (1 + ROUTING_COST)
    for key in ("c1_rps", "c16_rps"):
        r = rats[key]["G/E"]
        what = f"{_BY_KEY[key].label}: G/E >= {least:.2f}"
        out.append(_target("G", what, r, "x", None if r is None else r >= least))
    for key in ("cpu_us_per_request_c1", "cpu_us_per_request_c16"):
        r = rats[key]["G/E"]
        out.append(_target("G", f"{_BY_KEY[key].label}: G/E <= {most:.2f}", r, "x", None if r is None else r <= most))
    return out


def label_of(metric: Metric, counts: Mapping[str, int]) -> str:
    return metric.label.format(hold=f"{counts['hold']:,}", hold_max=f"{counts['hold_max']:,}")


def _ratio_cell(metric: Metric, r: float | None, name: str = "") -> str:
    if r is None:
        return "[dim]-[/dim]"
    if not metric.chart:
        return f"{r:.2f}x"
    # G/E is not meshlet against another proxy but routing's cost: green while within the allowed 10%
    slack = 1 + ROUTING_COST if name == "G/E" else 1.0
    good = r >= 1.0 / slack if metric.better == "higher" else r <= slack
    return f"[{'green' if good else 'red'}]{r:.2f}x[/]"


def table(
    vals: Mapping[str, Mapping[str, float | None]],
    rats: Mapping[str, Mapping[str, float | None]],
    counts: Mapping[str, int],
) -> Table:
    """Rows: metrics; columns: A-G, then the ratios (green: meshlet better, red: worse)."""
    t = Table(title="meshlet benchmark (one run, this machine)", title_justify="left")
    t.add_column("metric (better)", no_wrap=True)
    for s in SCENARIOS:
        t.add_column(f"{s} {HEADERS[s]}", justify="right")
    for name, _, _ in RATIOS:
        t.add_column(name, justify="right")
    for m in METRICS:
        cells = [m.fmt.format(v) if (v := vals[m.key][s]) is not None else "[dim]n/a[/dim]" for s in SCENARIOS]
        arrow = "↑" if m.better == "higher" else "↓"
        t.add_row(f"{label_of(m, counts)} {arrow}", *cells, *(_ratio_cell(m, rats[m.key][n], n) for n, _, _ in RATIOS))
    return t


def document(
    results: Mapping[str, Result | None],
    unavailable: Mapping[str, str],
    counts: Mapping[str, int],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON for machines: run metadata, every raw result, every metric with its ratios, the targets."""
    vals = values(results)
    rats = ratios(vals)
    return {
        **meta,
        "scenarios": {
            s: (
                {"available": True, **r}
                if (r := results.get(s)) is not None
                else {"available": False, "reason": unavailable.get(s, "not run")}
            )
            for s in SCENARIOS
        },
        "metrics": {
            m.key: {
                "label": label_of(m, counts),
                "better": m.better,
                "values": vals[m.key],
                "ratios": rats[m.key],
            }
            for m in METRICS
        },
        "targets": targets(vals, rats, counts["hold_max"]),
    }


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
