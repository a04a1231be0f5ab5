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
