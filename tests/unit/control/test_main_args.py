"""`python -m control serve` refuses a root namespace no ztunnel would take, naming it."""

from __future__ import annotations

import pytest

from control.main import parser


def test_a_root_namespace_that_is_no_namespace_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["serve", "--state", "s", "--root-namespace", "platform", "--istio-compat"])
    assert (args.root_namespace, args.istio_compat) == ("platform", True)
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "--state", "s", "--root-namespace", "Meshlet_System"])
    assert "'Meshlet_System' is not a namespace name" in capsys.readouterr().err
