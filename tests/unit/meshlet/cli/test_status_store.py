"""`meshlet status` lists every store error, each a problem: control's where its operator port is known (it reads
every object), else the agent's; control not answering is a problem of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshlet.cli import status
from meshlet.cli.endpoints import EndpointError, NodeEndpoints

AGENT: dict[str, Any] = {"store": {"errors": ["rejected a.yaml: bad", "rejected b.yaml: worse"]}}


def _ep(control: str | None) -> NodeEndpoints:
    return NodeEndpoints("node1", Path("/nonexistent/agent.sock"), ("127.0.0.1", 15000), control_metrics=control)


def test_every_control_error_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = [
        {"origin": "/s/p.yaml", "object": "AuthorizationPolicy mesh/bad", "reason": "spec.action: unknown"},
        {"origin": "/s/y.yaml", "object": None, "reason": "unreadable YAML"},
    ]
    warned = [{"code": "istio-label-ignored", "object": "Namespace x", "message": "label it so"}]
    monkeypatch.setattr(status, "control_status", lambda ep: {"errors": errors, "warnings": warned})
    problems: list[str] = []
    warnings: list[str] = []
    store = status._store(_ep("http://10.250.0.1:15014"), AGENT, problems, warnings)
    assert warnings == ["Namespace x: label it so"]  # said, but not a problem
    assert problems == [
        "invalid in the store (control): /s/p.yaml: AuthorizationPolicy mesh/bad: spec.action: unknown",
        "invalid in the store (control): /s/y.yaml: unreadable YAML",
    ]
    assert store == {"errors": [p.split(": ", 1)[1] for p in problems], "seenBy": "control"}


def test_without_control_the_agents_errors_are_listed_all_of_them() -> None:
    problems: list[str] = []
    assert status._store(_ep(None), AGENT, problems, [])["seenBy"] == "agent"
    assert problems == ["invalid in the store (agent): rejected a.yaml: bad",
                        "invalid in the store (agent): rejected b.yaml: worse"]  # fmt: skip


def test_control_not_answering_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(ep: NodeEndpoints) -> None:
        raise EndpointError("control did not answer on http://10.250.0.1:15014 (refused); is it running?")

    monkeypatch.setattr(status, "control_status", refuse)
    problems: list[str] = []
    status._store(_ep("http://10.250.0.1:15014"), AGENT, problems, [])
    assert problems[0].startswith("control did not answer") and len(problems) == 3  # then the agent's two


def test_the_lab_report_names_a_nodes_own_problems_and_lists_shared_ones_once() -> None:
    node1 = {"node": "node1", "problems": ["invalid in the store (control): a.yaml: bad", "ztunnel is down"],
             "warnings": ["Namespace x: a warning"]}  # fmt: skip
    node2 = {"node": "node2", "problems": ["invalid in the store (control): a.yaml: bad"],
             "warnings": ["Namespace x: a warning"]}  # fmt: skip
    report = status.lab_report([node1, node2], "demo")
    assert report["problems"] == ["invalid in the store (control): a.yaml: bad", "node1: ztunnel is down"]
    assert not report["healthy"] and report["nodes"] == [node1, node2] and report["lab"] == "demo"
    assert report["warnings"] == ["Namespace x: a warning"]  # control's, the same from every node: said once
    assert status.lab_report([{"node": "node1", "problems": [], "warnings": ["w"]}], "demo")["healthy"]


def test_on_a_lab_the_hints_name_the_command_that_starts_the_part_again(tmp_path: Path) -> None:
    from meshlet.cli.endpoints import agent_status, config_dump

    ep = NodeEndpoints("node2", tmp_path / "agent.sock", ("127.0.0.1", 1), lab="demo")
    with pytest.raises(EndpointError, match=r"`meshlet lab --id demo restart node2 agent`"):
        agent_status(ep)
    with pytest.raises(EndpointError, match=r"`meshlet lab --id demo restart node2 ztunnel`"):
        config_dump(ep)
    off_lab = NodeEndpoints(None, tmp_path / "agent.sock", ("127.0.0.1", 1))
    with pytest.raises(EndpointError, match="DaemonSet pod on this node") as caught:
        agent_status(off_lab)
    assert "meshlet lab" not in str(caught.value)  # no lab here to name


def test_an_agent_and_a_control_enrolling_by_other_labels_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    both = ["meshlet.io/dataplane-mode", "istio.io/dataplane-mode"]
    monkeypatch.setattr(status, "control_status", lambda ep: {"errors": [], "dataplaneLabels": both})
    problems: list[str] = []
    status._store(_ep("http://10.250.0.1:15014"), {**AGENT, "dataplaneLabels": both[:1]}, problems, [])
    assert problems == [
        "the agent enrolls by meshlet.io/dataplane-mode but control by meshlet.io/dataplane-mode, "
        "istio.io/dataplane-mode: give both the same --istio-compat (and --dataplane-label)"
    ]
    problems.clear()
    status._store(_ep("http://10.250.0.1:15014"), {**AGENT, "dataplaneLabels": both}, problems, [])
    assert problems == []
