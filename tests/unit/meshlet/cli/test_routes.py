"""`meshlet routes`: HTTPRoutes per Service with rules, weighted backends and status, from a ztunnel /config_dump."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshlet.cli import node
from meshlet.cli import routes as view
from meshlet.cli.main import cli
from meshlet_contracts.routes import (
    BackendRef,
    Condition,
    HTTPRoute,
    ParentRef,
    ParentStatus,
    PathMatch,
    RequestRedirect,
    RouteFilter,
    RouteMatch,
    RouteRule,
    ValueMatch,
)

WEB = ParentRef("web", "shop", 80)
OK = (Condition("Accepted", "True", "Accepted"), Condition("ResolvedRefs", "True", "ResolvedRefs"))
CANARY = HTTPRoute(
    "canary", "shop", (WEB,),
    (RouteRule((RouteMatch(PathMatch("PathPrefix", "/api"), headers=(ValueMatch("x-user", "j"),), method="GET"),),
               backends=(BackendRef("web-v1", "shop", 80, 90), BackendRef("web-v2", "shop", 80, 10))),),
    "2026-01-02T00:00:00Z", (ParentStatus(WEB, OK),),
)  # fmt: skip
OLDER = HTTPRoute(
    "moved", "shop", (ParentRef("web", "shop"),),
    (RouteRule((RouteMatch(PathMatch("Exact", "/old")),),
               (RouteFilter("RequestRedirect", RequestRedirect(path=None)),)),),
    "2026-01-01T00:00:00Z",
    (ParentStatus(ParentRef("web", "shop"), (Condition("Accepted", "True", "Accepted"),
                                              Condition("ResolvedRefs", "False", "BackendNotFound", "x"))),),
)  # fmt: skip
OTHER = HTTPRoute("db", "data", (ParentRef("db", "data"),), (RouteRule(),), "")
DUMP: dict[str, Any] = {"node": "node1", "routes": [dict(r.to_wire()) for r in (CANARY, OTHER, OLDER)]}


def test_rows_per_service_in_precedence_order_with_status() -> None:
    rows = view.rows(DUMP, None)
    assert [(r["service"], r["route"]) for r in rows] == [
        ("data/db", "data/db"), ("shop/web", "shop/moved"), ("shop/web", "shop/canary")
    ]  # fmt: skip
    canary = rows[2]
    assert canary["rules"][0]["backends"] == [
        {"service": "shop/web-v1", "port": 80, "weight": 90}, {"service": "shop/web-v2", "port": 80, "weight": 10}
    ]  # fmt: skip
    assert (
        view.cell(canary, "rules") == "PathPrefix /api GET header x-user=j -> shop/web-v1:80 (90), shop/web-v2:80 (10)"
    )
    assert view.cell(canary, "conditions") == "Accepted=True, ResolvedRefs=True"
    assert view.cell(rows[1], "rules") == "Exact /old -> redirect"
    assert view.cell(rows[1], "conditions") == "Accepted=True, ResolvedRefs=False (BackendNotFound)"
    assert view.cell(rows[1], "routePort") == "all" and view.cell(canary, "routePort") == "80"
    assert view.cell(rows[0], "rules") == "PathPrefix / -> no backend (500)"
    assert [r["route"] for r in view.rows(DUMP, "data")] == ["data/db"]


def test_a_dump_without_routes_lists_none() -> None:
    assert view.rows({"node": "n"}, None) == []


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch) -> None:
    here = node.NodeEndpoints(None, Path("/nonexistent"), ("127.0.0.1", 15000))
    monkeypatch.setattr(node, "node_endpoints", lambda *args: here)
    monkeypatch.setattr(node, "config_dump", lambda ep: DUMP)


@pytest.mark.usefixtures("fake_node")
def test_command_prints_json_and_a_table() -> None:
    result = CliRunner().invoke(cli, ["routes", "-n", "shop", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert [r["route"] for r in json.loads(result.output)] == ["shop/moved", "shop/canary"]
    table = CliRunner().invoke(cli, ["routes"], env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "shop/canary" in table.output and "ResolvedRefs=False (BackendNotFound)" in table.output
