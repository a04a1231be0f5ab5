"""A lab pod misbehaving as a whole: the ECHO_* variables of a Deployment's container reach the sample app, which
reads them into `Faults` (slow, failing, or resetting every n-th request)."""

from __future__ import annotations

from typing import Any

import pytest

from meshlet.lab.app_echo import Faults
from meshlet.lab.apps_objects import app_env


def deployment(env: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "flaky", "namespace": "shop"},
        "spec": {
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "a", "env": env}]}}
        },
    }


def test_only_the_echo_variables_of_the_first_container_reach_the_app() -> None:
    env = [{"name": "ECHO_RESET_EVERY", "value": 2}, {"name": "PATH", "value": "/evil"}, {"name": "ECHO_DELAY"}]
    assert app_env(deployment(env)) == {"ECHO_RESET_EVERY": "2", "ECHO_DELAY": ""}
    assert app_env(deployment(None)) == {}
    bare = deployment(None)
    del bare["spec"]["template"]["spec"]
    assert app_env(bare) == {}


def test_faults_from_the_environment() -> None:
    assert not Faults.from_env({}).any
    faults = Faults.from_env({"ECHO_DELAY": "250ms", "ECHO_STATUS": "503", "ECHO_RESET_EVERY": ""})
    assert (faults.delay, faults.status, faults.reset_every, faults.any) == (0.25, 503, 0, True)


@pytest.mark.parametrize(
    ("env", "named"),
    [({"ECHO_STATUS": "99"}, "ECHO_STATUS"), ({"ECHO_RESET_EVERY": "0"}, "ECHO_RESET_EVERY"),
     ({"ECHO_RESET_EVERY": "x"}, "ECHO_RESET_EVERY"), ({"ECHO_DELAY": "1d"}, "delay")],
)  # fmt: skip
def test_bad_fault_variables_are_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Faults.from_env(env)


def test_reset_every_two_resets_exactly_half_of_the_requests() -> None:
    faults = Faults.from_env({"ECHO_RESET_EVERY": "2"})
    assert [faults.reset_now() for _ in range(6)] == [False, True] * 3
    assert not any(Faults.from_env({}).reset_now() for _ in range(3))
