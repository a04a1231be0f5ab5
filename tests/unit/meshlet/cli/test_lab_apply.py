"""`meshlet lab apply|delete -f` and `lab up --apps`: manifests are read and checked before the lab is touched,
and the outcome is printed one line per object, as kubectl does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshlet.cli import lab as lab_cli
from meshlet.cli.main import cli
from meshlet.lab.apps import AppsState, Change

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"


@pytest.fixture(autouse=True)
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_cli, "_need_root", lambda: None)


def test_a_bad_file_is_refused_before_the_lab_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touched: list[Any] = []
    monkeypatch.setattr(lab_cli.cluster, "up", lambda *a: touched.append(a))
    monkeypatch.setattr(lab_cli.deploy, "apply", lambda *a: touched.append(a))
    (tmp_path / "bad.yaml").write_text("kind: Deployment\napiVersion: apps/v1\nmetadata: {}\n")
    for argv in (["apply", "-f"], ["up", "--apps"]):
        result = CliRunner().invoke(cli, ["lab", "--id", "t", *argv, str(tmp_path / "bad.yaml")])
        assert result.exit_code == 2 and "document 1: Deployment without metadata.name" in result.output
    result = CliRunner().invoke(cli, ["lab", "--id", "t", "apply", "-f", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "missing.yaml" in result.output
    assert touched == []


def test_apply_and_delete_print_one_line_per_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, list[Any]]] = []

    def fake(verb: str, line: str) -> Any:
        def run(lab_id: str, manifests: list[Any]) -> Change:
            seen.append((verb, lab_id, manifests))
            return Change(AppsState(), results=[line])

        return run

    monkeypatch.setattr(lab_cli.deploy, "apply", fake("apply", "Namespace/shop created"))
    monkeypatch.setattr(lab_cli.deploy, "delete", fake("delete", "Namespace/shop not found"))
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    result = CliRunner().invoke(cli, ["lab", "--id", "t", "apply", "-f", str(tmp_path / "ns.yaml")])
    assert result.exit_code == 0 and result.output == "Namespace/shop created\n"
    result = CliRunner().invoke(cli, ["lab", "--id", "t", "delete", "-f", "-"], input=NAMESPACE)
    assert result.exit_code == 1 and result.output == "Namespace/shop not found\n"  # kubectl's exit code too
    assert [(verb, lab_id, m[0]["metadata"]["name"]) for verb, lab_id, m in seen] == [
        ("apply", "t", "shop"),
        ("delete", "t", "shop"),
    ]
