"""`meshlet lab ip NAME`: a pod's or node's IP, so examples and scripts name pods instead of hard-coding addresses
that differ from one lab slot to another."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from meshlet.cli.main import cli
from meshlet.lab.plan import plan_lab
from meshlet.lab.state import LabState


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabState:
    monkeypatch.setenv("MESHLET_LAB_ROOT", str(tmp_path))
    (tmp_path / "t1").mkdir()
    state = LabState(plan=plan_lab("t1", 3, 2, 2), directory=str(tmp_path / "t1"))
    state.save()
    return state


def test_a_pods_ip_by_name_or_namespace_and_name_and_a_nodes(lab: LabState) -> None:
    web_2a = next(p for p in lab.plan.pods if p.name == "web-2a")
    for name in ("web-2a", f"{web_2a.namespace}/web-2a"):
        result = CliRunner().invoke(cli, ["lab", "--id", "t1", "ip", name])
        assert (result.exit_code, result.output) == (0, f"{web_2a.ip}\n")
    result = CliRunner().invoke(cli, ["lab", "ip", "--id", "t1", "node2"])
    assert result.output == f"{lab.plan.node('node2').ip}\n"


def test_an_unknown_name_is_an_error_naming_what_there_is(lab: LabState) -> None:
    result = CliRunner().invoke(cli, ["lab", "--id", "t1", "ip", "web-9z"])
    said = result.output + str(result.exception or "")
    assert result.exit_code == 1 and "no node or pod 'web-9z'" in said and "mesh/web-1a" in said
