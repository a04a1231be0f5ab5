"""Scenario G (E with an HTTPRoute and TrafficPolicies in force): its objects are valid and in force as control
sees them, the wait reads a ztunnel's config dump, and G/E is reported and judged against issue #15's 10%."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rich.console import Console

from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.store import ConfigStore
from tests.bench import report, routing, services
from tests.bench.lab import requests_by_destination
from tests.bench.run import _scenarios

NS = "mesh"


def _stored() -> ConfigStore:
    """Control's store holding E's Services and G's objects (VIPs filled in, as `lab apply` allocates them)."""
    objs: list[dict[str, Any]] = services.service_objects(NS, "10.96.1.200", "10.96.1.201")
    for i, obj in enumerate(routing.manifests(NS)):
        if obj["kind"] == "Service":
            obj["spec"]["clusterIP"] = f"10.96.1.{10 + i}"
        objs.append(obj)
    store = ConfigStore(MeshSettings())
    store.apply([SourceBatch("bench.yaml", tuple(objs))])
    return store


def _dump(store: ConfigStore, endpoints: bool = True) -> dict[str, Any]:
    """What a ztunnel's /config_dump shows of that store (the server pod as every Service's endpoint)."""
    names = [services.HTTP_SERVICE, services.TCP_SERVICE, *(name for name, _ in routing.BACKENDS)]
    return {
        "routes": [dict(r) for r in store.state["http_routes"].values()],
        "policies": {"traffic": [dict(p) for p in store.state["traffic_policies"].values()]},
        "services": [
            {"name": n, "namespace": NS, "endpoints": [{"address": "10.244.2.3"}] if endpoints else []} for n in names
        ],
    }


def test_control_accepts_every_object_and_resolves_the_route() -> None:
    store = _stored()
    assert store.all_errors() == []
    route = _dump(store)["routes"][0]
    conditions = {c["type"]: c["status"] for s in route["status"] for c in s["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}
    assert sorted(store.state["traffic_policies"]) == sorted(f"{NS}/{name}" for name in routing.services())


def test_the_route_has_three_rules_and_the_default_splits_80_20_with_timeout_and_retry() -> None:
    [*specific, default] = routing.route_object(NS)["spec"]["rules"]
    assert [list(rule["matches"][0]) for rule in specific] == [["headers"], ["path"]]
    assert "matches" not in default  # every request: wrk's /1k lands here after both matches are tried
    assert [(b["name"], b["weight"]) for b in default["backendRefs"]] == list(routing.BACKENDS)
    for rule in (*specific, default):
        assert rule["timeouts"] == {"request": "10s"} and rule["retry"] == {"attempts": 2, "codes": [503]}


def test_policy_limits_are_far_above_what_the_benchmark_reaches() -> None:
    for policy in routing.policy_objects(NS):
        spec = policy["spec"]
        assert spec["loadBalancer"] == {"simple": "LEAST_REQUEST"}
        assert spec["connectionPool"]["tcp"]["maxConnections"] >= 100 * 10_000  # 10,000 held connections
        assert spec["rateLimit"]["requestsPerUnit"] >= 100 * 10_000  # the L7 path serves some thousands per second
        assert spec["rateLimit"]["burst"] == spec["rateLimit"]["requestsPerUnit"]


def test_pending_is_none_once_route_policies_and_endpoints_are_in_the_dump() -> None:
    store = _stored()
    assert routing.pending(_dump(store), NS) is None


def test_pending_names_what_is_missing() -> None:
    store = _stored()
    assert routing.pending({}, NS) == f"HTTPRoute {NS}/{routing.ROUTE} not in the config"
    no_policy = _dump(store)
    no_policy["policies"]["traffic"] = no_policy["policies"]["traffic"][:1]
    assert "TrafficPolicy" in (routing.pending(no_policy, NS) or "")
    assert "without an endpoint" in (routing.pending(_dump(store, endpoints=False), NS) or "")
    refused = _dump(store)
    route = copy.deepcopy(refused["routes"][0])
    route["status"][0]["conditions"][0] = {"type": "Accepted", "status": "False", "reason": "NoMatchingParent",
                                           "message": "Service mesh/bench-http not found"}  # fmt: skip
    refused["routes"] = [route]
    assert routing.pending(refused, NS) == (
        f"HTTPRoute {NS}/{routing.ROUTE} Accepted: False (NoMatchingParent: Service mesh/bench-http not found)"
    )


def _result(rps: float, cpu_us: float) -> dict[str, Any]:
    return {
        "c1": {"rps": rps, "proxy_cpu_us_per_request": cpu_us},
        "c16": {"rps": rps * 2, "proxy_cpu_us_per_request": cpu_us / 2},
    }


def _targets(results: dict[str, Any]) -> dict[str, bool | None]:
    vals = report.values(results)
    return {t["target"]: t["holds"] for t in report.targets(vals, report.ratios(vals), 10000) if t["scenario"] == "G"}


def test_g_over_e_is_routing_cost_and_judged_against_ten_percent() -> None:
    within = {"E": _result(1000, 600.0), "G": _result(950, 640.0)}
    rats = report.ratios(report.values(within))
    assert rats["c1_rps"]["G/E"] == pytest.approx(0.95)
    assert rats["cpu_us_per_request_c16"]["G/E"] == pytest.approx(640 / 600)
    assert _targets(within) == {
        "c=1 req/s: G/E >= 0.91": True,
        "c=16 req/s: G/E >= 0.91": True,
        "proxy CPU µs/req, c=1: G/E <= 1.10": True,
        "proxy CPU µs/req, c=16: G/E <= 1.10": True,
    }
    costly = {"E": _result(1000, 600.0), "G": _result(850, 700.0)}
    assert not any(_targets(costly).values())
    assert set(_targets({"E": _result(1000, 600.0)}).values()) == {None}  # G not measured


def test_table_and_document_show_g_next_to_e_with_the_ratio() -> None:
    results = {"E": _result(1000, 600.0), "G": _result(950, 640.0)}
    vals = report.values(results)
    console = Console(width=260, record=True)
    console.print(report.table(vals, report.ratios(vals), {"hold": 1000, "hold_max": 10000}))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "metric" in line)
    assert header.index("E L7 eBPF") < header.index("G L7 routed") < header.index("G/E")
    assert "0.95x" in text
    doc = report.document(results, {}, {"hold": 1000, "hold_max": 10000}, {})
    assert doc["scenarios"]["G"]["available"]
    assert doc["metrics"]["c16_rps"]["ratios"]["G/E"] == pytest.approx(0.95)


def test_g_is_a_scenario_letter() -> None:
    assert _scenarios("E,G") == "EG"
    assert "".join(report.SCENARIOS) == "ABCDEFG"


def test_source_side_requests_are_counted_per_destination_service() -> None:
    text = (
        'istio_requests_total{reporter="source",destination_service="bench-http-v1.mesh.svc.cluster.local"} 80\n'
        'istio_requests_total{reporter="source",destination_service="bench-http-v2.mesh.svc.cluster.local"} 20\n'
        'istio_requests_total{reporter="destination",destination_service="bench-http.mesh.svc.cluster.local"} 100\n'
    )
    assert requests_by_destination(text) == {
        "bench-http-v1.mesh.svc.cluster.local": 80.0,
        "bench-http-v2.mesh.svc.cluster.local": 20.0,
    }
