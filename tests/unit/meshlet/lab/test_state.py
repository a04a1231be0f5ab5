"""Lab state on disk: it reads back what was saved, slots are never shared, bad files are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlet.lab.plan import PlanError, plan_lab
from meshlet.lab.processes import Started
from meshlet.lab.state import LabState, free_slot, known_labs, lab_dir


@pytest.fixture(autouse=True)
def labs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHLET_LAB_ROOT", str(tmp_path))
    return tmp_path


def _save(lab_id: str, slot: int) -> LabState:
    lab_dir(lab_id).mkdir(parents=True)
    state = LabState(plan=plan_lab(lab_id, slot, 2, 2), directory=str(lab_dir(lab_id)))
    state.processes["app/mesh/web-1a"] = Started(pid=42, starttime=7, argv=("x", "y"), log="/tmp/l")
    state.save()
    return state


def test_state_round_trips() -> None:
    saved = _save("a", 3)
    loaded = LabState.load("a")
    assert loaded == saved
    assert (lab_dir("a") / "lab.json").stat().st_mode & 0o777 == 0o600


def test_free_slot_skips_slots_of_other_labs_but_not_our_own() -> None:
    _save("a", 0)
    _save("b", 1)
    assert free_slot("c") == 2
    assert free_slot("a") == 0
    assert known_labs() == ["a", "b"]


def test_unreadable_state_names_the_file_and_the_fix() -> None:
    lab_dir("a").mkdir(parents=True)
    (lab_dir("a") / "lab.json").write_text("{not json")
    with pytest.raises(PlanError, match=r"lab\.json is unreadable.*meshlet lab down --id a"):
        LabState.load("a")


def test_missing_lab_loads_as_none() -> None:
    assert LabState.load("nope") is None


def test_ztunnel_args_round_trip_and_an_older_state_file_loads_without_them() -> None:
    lab_dir("z").mkdir(parents=True)
    plan = plan_lab("z", 0, 1, 1, ztunnel_args=("--http-upstream-idle-timeout", "0"))
    LabState(plan=plan, directory=str(lab_dir("z"))).save()
    loaded = LabState.load("z")
    assert loaded is not None and loaded.plan.ztunnel_args == ("--http-upstream-idle-timeout", "0")
    path = lab_dir("z") / "lab.json"
    data = json.loads(path.read_text())
    del data["plan"]["ztunnel_args"]  # as `up` wrote it before --ztunnel-arg existed
    path.write_text(json.dumps(data))
    older = LabState.load("z")
    assert older is not None and older.plan.ztunnel_args == ()
