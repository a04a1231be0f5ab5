"""`meshlet version` off a lab: the CLI's build, and this host's agent and ztunnel, each with why it did not answer
(exit 1); a named lab that is not up is an error. The lab case runs against a live lab (tests/e2e/test_node_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshlet.cli.main import cli
from meshlet_contracts import build


@pytest.fixture(autouse=True)
def no_labs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHLET_LAB_ROOT", str(tmp_path / "labs"))
    monkeypatch.delenv("MESHLET_LAB", raising=False)


def test_off_a_lab_the_cli_answers_and_this_hosts_parts_say_why_they_did_not() -> None:
    result = CliRunner().invoke(cli, ["version", "-o", "json"])
    assert result.exit_code == 1  # no agent or ztunnel on this host
    report = json.loads(result.output)
    assert report["cli"] == build.build() and report["cli"]["version"] != ""
    assert report["control"] is None and report["lab"] is None
    parts = report["nodes"]["this host"]
    assert "agent.sock" in parts["agent"]["error"] and "15000" in parts["ztunnel"]["error"]


def test_the_table_names_each_part() -> None:
    result = CliRunner().invoke(cli, ["version"])
    for word in ("cli", "agent", "ztunnel", "no answer", build.version()):
        assert word in result.output


def test_a_named_lab_that_is_not_up_is_an_error() -> None:
    result = CliRunner().invoke(cli, ["version", "--lab", "gone"])
    assert result.exit_code == 1 and "no lab 'gone'; no lab is up here" in result.output
