"""The README's walk-through, run as written, so the README cannot drift from the product: every ```sh block that
follows a `<!-- walkthrough` marker, in the README's order, each as one bash script (`set -e -x`: the first
command that fails ends it, and the trace names it), with `meshlet` the venv's and MESHLET_LAB naming a lab of
this test's own (the README's commands follow it, as a user's shell would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import meshlet, new_lab_id

README = Path(__file__).parents[2] / "README.md"
BLOCK = re.compile(r"<!-- walkthrough[^>]*-->\n```sh\n(.*?)```", re.S)


def walkthrough() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_the_readme_marks_its_walkthrough_from_lab_up_to_lab_down() -> None:
    blocks = walkthrough()
    assert len(blocks) >= 2
    assert blocks[0].startswith("meshlet lab up")
    assert blocks[-1].rstrip().splitlines()[-1].startswith("meshlet lab down")


def test_the_readme_walkthrough_runs_as_written_against_a_fresh_lab() -> None:
    lab_id = new_lab_id()
    env = {**os.environ, "MESHLET_LAB": lab_id, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        for number, block in enumerate(walkthrough(), 1):
            proc = subprocess.run(["bash", "-e", "-x", "-c", block], env=env, capture_output=True, text=True,
                                  timeout=600, cwd=README.parent)  # fmt: skip
            assert proc.returncode == 0, (
                f"README walkthrough block {number} failed (exit {proc.returncode}); the trace ends with the command:\n"
                f"{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}"
            )
    finally:
        meshlet("lab", "--id", lab_id, "down", check=False)
