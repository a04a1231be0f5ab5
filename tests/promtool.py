"""`promtool check metrics` (Debian's `prometheus` package, installed by .ci/setup): Prometheus' own lint of
the exposition text, which tests run on what ztunnel and control serve on /metrics."""

from __future__ import annotations

import shutil
import subprocess


def promtool_check_metrics(text: str) -> str:
    """What promtool reports about `text` (problems, one a line; "" when it has nothing to say)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run `bash .ci/setup` (Debian package `prometheus`)"
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    report = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 or report, f"promtool failed with {done.returncode} and said nothing"
    return report


ISTIO_NAMING = frozenset({'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"'})
"""promtool's naming lint on Istio's own metric names, which dashboards query as they are: not a problem."""


def promtool_problems(text: str) -> list[str]:
    """What promtool reports about `text`, less its remarks on Istio's standard names (`ISTIO_NAMING`)."""
    return [line for line in promtool_check_metrics(text).splitlines() if line not in ISTIO_NAMING]
