"""A lab the user names must exist: `--lab NAME` (or MESHLET_LAB) for a lab that is not up is an error naming the
labs that are, never an answer about this host's node; without either, the commands ask this host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshlet.cli.main import cli


@pytest.fixture
def labs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "labs"
    for lab_id in ("alpha", "beta"):
        (root / lab_id).mkdir(parents=True)
        (root / lab_id / "lab.json").write_text(json.dumps({"plan": {}}))
    (root / "half-made").mkdir()  # no lab.json: not a lab
    monkeypatch.setenv("MESHLET_LAB_ROOT", str(root))
    monkeypatch.delenv("MESHLET_LAB", raising=False)
    return root


@pytest.mark.parametrize("command", ["status", "check", "workloads", "policies", "certs", "connections"])
def test_a_named_lab_that_is_not_up_is_an_error_naming_those_that_are(labs: Path, command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--lab", "gamma"])
    assert result.exit_code == 1
    assert "no lab 'gamma'; labs here: alpha, beta" in result.output


def test_the_environment_names_a_lab_as_the_flag_does(labs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHLET_LAB", "gamma")
    result = CliRunner().invoke(cli, ["workloads", "-o", "json"])
    assert result.exit_code == 1 and "no lab 'gamma'" in result.output


def test_with_no_lab_up_the_error_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHLET_LAB_ROOT", str(tmp_path / "nothing"))
    result = CliRunner().invoke(cli, ["status", "--lab", "demo"])
    assert result.exit_code == 1
    assert "no lab 'demo'; no lab is up here (`meshlet lab up`)" in result.output


def test_without_a_lab_named_the_commands_ask_this_hosts_node(labs: Path, tmp_path: Path) -> None:
    # The default lab (`demo`) is not up: the question goes to this host's agent, whose socket is not there.
    result = CliRunner().invoke(cli, ["status", "--agent-socket", str(tmp_path / "agent.sock"), "-o", "json"])
    assert "no lab" not in result.output
    result = CliRunner().invoke(cli, ["workloads"])
    assert "no lab" not in result.output


def test_the_lab_id_can_follow_the_subcommand_and_a_missing_lab_names_those_that_are(labs: Path) -> None:
    for args in (["lab", "status", "--id", "gamma"], ["lab", "--id", "gamma", "status"]):
        result = CliRunner().invoke(cli, [*args, "-o", "json"])
        said = result.output + str(result.exception or "")  # a LabError: `meshlet` prints it as one red line
        assert result.exit_code == 1, args
        assert "no lab 'gamma' is up" in said and "labs here: alpha, beta" in said, args


def test_a_bad_lab_id_after_the_subcommand_is_refused_as_before_it() -> None:
    result = CliRunner().invoke(cli, ["lab", "status", "--id", "Bad_Id"])
    assert result.exit_code == 2 and "lab id 'Bad_Id' is invalid" in result.output
