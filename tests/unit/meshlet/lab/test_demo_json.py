"""`meshlet lab demo -o json` speaks camelCase like every other command's JSON (scripts read one convention)."""

from __future__ import annotations

import re
from typing import Any

from meshlet.lab import demo
from meshlet.lab.demo import Call
from meshlet.lab.plan import plan_lab

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_a_calls_json_is_camel_case() -> None:
    plan = plan_lab("t1", 0, 2, 2)
    call = Call(plan.pods[0], plan.pods[1], 200, "10.244.0.2", "", "mTLS (HBONE)", "allowed")
    data = call.to_json()
    assert {"fromNode", "toNode", "peerSeen"} <= set(data)
    assert all(CAMEL.match(k) for k in _keys(data)), sorted(_keys(data))


def test_the_ztunnel_summary_is_camel_case_even_when_a_node_does_not_answer(monkeypatch: Any) -> None:
    plan = plan_lab("t1", 0, 2, 2)

    class Refused:
        def open(self, url: str, timeout: float) -> Any:
            raise OSError("connection refused")

    monkeypatch.setattr(demo, "_DIRECT", Refused())
    summary = demo.ztunnel_summary(plan)
    assert [s["node"] for s in summary] == ["node1", "node2"] and all("mutualTls" in s for s in summary)
    assert all(CAMEL.match(k) for k in _keys(summary)), sorted(_keys(summary))


def test_the_demo_table_fits_80_columns_one_line_per_call() -> None:
    from rich.console import Console

    from meshlet.cli.demo_view import calls_table
    from meshlet.lab.demo import expected_path

    plan = plan_lab("t1", 0, 2, 2)
    enrolled = {(p.namespace, p.name) for p in plan.pods if p.namespace == "mesh"}
    calls = [Call(s, d, 200, s.ip, "", expected_path(s, d, enrolled), "allowed")
             for s in plan.pods for d in plan.pods if s is not d]  # fmt: skip
    console = Console(width=80, record=True)
    console.print(calls_table(calls))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    body = lines[lines.index(next(line for line in lines if "───" in line)) + 1 :]
    assert len([line for line in body if line.strip()]) == len(calls)  # one line per call: nothing wrapped
    assert any("mTLS between ztunnels" in line for line in body)
    assert any("leaves the mesh in plaintext" in line for line in body)
    failed = Call(plan.pods[0], plan.pods[1], 0, "", "Connection timed out after 3001 ms", "-", "-")
    console.print(calls_table([failed]))
    assert "Connection timed out" in console.export_text()
