"""HTTPRoute status entries as control writes them: ours beside other controllers', transition times kept."""

from __future__ import annotations

from typing import Any

from control.sources.reporting import CONTROLLER, event_for, parents_status
from meshlet_contracts.routes import Condition, ParentRef, ParentStatus

ACCEPTED = ParentStatus(ParentRef("web", "mesh", 80), (Condition("Accepted", "True", "Accepted", ""),))
REFUSED = ParentStatus(ParentRef("web", "mesh", 80), (Condition("Accepted", "False", "NoMatchingParent", "gone"),))
THEIRS = {"parentRef": {"name": "gw"}, "controllerName": "example.com/gw", "conditions": []}


def _route(parents: list[dict[str, Any]], generation: int = 3) -> dict[str, Any]:
    return {"metadata": {"name": "r", "namespace": "mesh", "generation": generation}, "status": {"parents": parents}}


def test_other_controllers_entries_are_kept_and_ours_replaced() -> None:
    ours, parents = parents_status(_route([THEIRS]), [ACCEPTED])
    assert parents == [THEIRS, *ours]
    [entry] = ours
    assert entry["controllerName"] == CONTROLLER
    assert entry["parentRef"] == {"group": "", "kind": "Service", "name": "web", "namespace": "mesh", "port": 80}
    [condition] = entry["conditions"]
    assert (condition["status"], condition["observedGeneration"]) == ("True", 3)
    again, parents = parents_status(_route([THEIRS, *ours]), [ACCEPTED])
    assert again == ours and parents == [THEIRS, *ours]  # nothing moved: not even the transition time


def test_a_condition_whose_status_flips_gets_a_new_transition_time() -> None:
    ref = parents_status(_route([]), [ACCEPTED])[0][0]["parentRef"]
    since = {"type": "Accepted", "status": "True", "lastTransitionTime": "2000-01-01T00:00:00Z"}
    old = {"parentRef": ref, "controllerName": CONTROLLER, "conditions": [since]}
    [entry], _ = parents_status(_route([old]), [REFUSED])
    assert entry["conditions"][0]["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    [entry], _ = parents_status(_route([old]), [ACCEPTED])
    assert entry["conditions"][0]["lastTransitionTime"] == "2000-01-01T00:00:00Z"


def test_events_of_cluster_scoped_objects_go_to_default() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mesh", "uid": "u1", "resourceVersion": "7"}}
    event = event_for(ns, "x" * 5000)
    assert event["metadata"]["namespace"] == "default" and "namespace" not in event["involvedObject"]
    assert event["involvedObject"]["uid"] == "u1" and len(event["message"]) == 1024
