"""The setup step is idempotent: run again on a set-up machine, it changes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="setup installs Debian packages: needs root")
def test_second_setup_run_changes_nothing() -> None:
    proc = subprocess.run(["bash", str(ROOT / ".ci/setup")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    for change in ("installing", "linking", "mounting", "creating venv", "exposing"):
        assert change not in out, out
    assert "ready:" in out
