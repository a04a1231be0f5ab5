"""`meshlet lab up --ztunnel-arg`: every value reaches the lab, in order, even one that looks like a flag."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from meshlet.cli import lab as lab_cli
from meshlet.cli.main import cli


class _Stop(Exception):
    """Raised by the stand-in for cluster.up: the test needs its arguments, not a lab."""


def test_ztunnel_args_are_passed_through_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def fake_up(*args: Any) -> None:
        seen.append(args)
        raise _Stop

    monkeypatch.setattr(lab_cli, "_need_root", lambda: None)
    monkeypatch.setattr(lab_cli.cluster, "up", fake_up)
    argv = ["lab", "--id", "t", "up", "--ztunnel-arg=--http-upstream-idle-timeout", "--ztunnel-arg", "0"]
    result = CliRunner().invoke(cli, argv)
    assert isinstance(result.exception, _Stop), result.output
    assert seen[0][-3] == ("--http-upstream-idle-timeout", "0")  # then the source and Istio compatibility


def test_without_the_option_ztunnel_gets_nothing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def fake_up(*args: Any) -> None:
        seen.append(args)
        raise _Stop

    monkeypatch.setattr(lab_cli, "_need_root", lambda: None)
    monkeypatch.setattr(lab_cli.cluster, "up", fake_up)
    result = CliRunner().invoke(cli, ["lab", "--id", "t", "up"])
    assert isinstance(result.exception, _Stop), result.output
    assert seen[0][-3:] == ((), "file", False)
    result = CliRunner().invoke(cli, ["lab", "--id", "t", "up", "--istio-compat"])
    assert isinstance(result.exception, _Stop), result.output
    assert seen[1][-1] is True
