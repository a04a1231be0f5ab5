"""`meshlet check` tells failures from warnings (what only the eBPF backend needs), exits 1 on failures only,
and points each check to a README section that exists."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from meshlet.cli import checks
from meshlet.cli.checks import Check, checks_report, print_checks

README = Path(__file__).parents[4] / "README.md"


def _anchors() -> set[str]:
    """GitHub's anchors of the README's headings."""
    out = set()
    for line in README.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


def test_what_only_ebpf_needs_warns_and_the_rest_fails() -> None:
    assert Check("BTF", False, "missing").level == "warn"
    assert Check("bcc", False, "ImportError").level == "warn"
    assert Check("kernel version", False, "4.19").level == "fail"
    assert Check("agent socket", False, "refused").level == "fail"


def test_warnings_alone_pass_and_a_failure_does_not() -> None:
    warned = [("kernel", [Check("BTF", False, "missing", "a BTF kernel"), Check("cgroup v2", True, "mounted")])]
    report = checks_report(warned)
    assert (report["ok"], report["failures"], report["warnings"]) == (True, 0, 1)
    failed = [("node", [Check("agent socket", False, "refused", "start it", checks.NODE)]), *warned]
    assert checks_report(failed)["ok"] is False and checks_report(failed)["failures"] == 1
    console = Console(record=True, width=200)
    print_checks(failed, console)
    text = console.export_text()
    assert "start it (see README.md#looking-at-a-node)" in text and "1 failed, 1 warnings" in text


def test_every_check_points_to_a_readme_section_that_exists() -> None:
    anchors = _anchors()
    for docs in (checks.SETUP, checks.NODE, checks.CONTROL, checks.FAIL_CLOSED):
        path, _, anchor = docs.partition("#")
        assert path == "README.md" and anchor in anchors, (docs, sorted(anchors)[:10])
    for check in checks.kernel_checks() + checks.tool_checks():
        assert check.docs.partition("#")[2] in anchors
