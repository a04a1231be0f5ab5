"""The PNG for people: every ratio (C/B, D/B, C/A, E/F, G/E) against the 1.0 line, one panel per direction.

Top panel: metrics where higher is better (throughput; the targets say C/B >= 1.0). Bottom panel:
metrics where lower is better (latency, CPU, memory), so there a bar left of 1.0 is meshlet ahead.
Log scale: 0.1x and 10x are equally far from parity.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display: set before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from tests.bench.report import METRICS, RATIOS, Metric, label_of  # noqa: E402

_COLORS = {"C/B": "#1f77b4", "D/B": "#9467bd", "C/A": "#bbbbbb", "E/F": "#2ca02c", "G/E": "#ff7f0e"}


def _panel(
    ax: Axes,
    metrics: list[Metric],
    rats: Mapping[str, Mapping[str, float | None]],
    counts: Mapping[str, int],
    title: str,
) -> None:
    names = [name for name, _, _ in RATIOS]
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        ys, xs = [], []
        for row, m in enumerate(metrics):
            r = rats[m.key][name]
            if r is not None and r > 0:
                ys.append(row + (i - (len(names) - 1) / 2) * height)
                xs.append(r)
        if not xs:
            continue
        bars = ax.barh(ys, xs, height=height, color=_COLORS[name], label=name)
        ax.bar_label(bars, labels=[f"{x:.2f}x" for x in xs], fontsize=7, padding=2)
    ax.axvline(1.0, color="black", linewidth=1.2, linestyle="--", label="1.0 (parity / target)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.set_yticks(range(len(metrics)), [label_of(m, counts) for m in metrics], fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("ratio (log scale)")
    ax.grid(axis="x", which="both", alpha=0.3)
    lo, hi = ax.get_xlim()
    ax.set_xlim(min(lo, 0.05), max(hi, 3.0))  # room for the bar labels, and 1.0 never at an edge


def write_chart(
    path: Path,
    rats: Mapping[str, Mapping[str, float | None]],
    counts: Mapping[str, int],
    subtitle: str,
) -> None:
    """Write the ratio chart as PNG at `path`."""
    higher = [m for m in METRICS if m.chart and m.better == "higher"]
    lower = [m for m in METRICS if m.chart and m.better == "lower"]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [len(higher) + 1, len(lower)]}
    )
    _panel(top, higher, rats, counts, "higher is better: meshlet ahead right of 1.0 (target: C/B, D/B, E/F >= 1.0)")
    _panel(bottom, lower, rats, counts, "lower is better: meshlet ahead left of 1.0")
    handles, labels = bottom.get_legend_handles_labels()
    if not handles:
        handles, labels = top.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=9)
    fig.suptitle(
        "meshlet benchmark: C = meshlet (iptables), D = meshlet (eBPF), B = HAProxy mTLS pair, A = direct;\n"
        "L7: E = meshlet L7 (eBPF), F = HAProxy mode http mTLS pair, G = E + HTTPRoute + TrafficPolicy\n" + subtitle,
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
