"""`meshlet services` and `meshlet workloads` say which ports are L7 and why, from a ztunnel /config_dump."""

from __future__ import annotations

from typing import Any

from meshlet.cli import inspect


def workload(name: str, uid: str, labels: dict[str, str], enrolled: bool = True, ns: str = "shop") -> dict[str, Any]:
    return {
        "uid": uid,
        "name": name,
        "namespace": ns,
        "node": "node1",
        "ips": ["10.0.0.1"],
        "service_account": "default",
        "identity": f"spiffe://cluster.local/ns/{ns}/sa/default",
        "enrolled": enrolled,
        "labels": labels,
    }


def policy(ns: str, name: str, selector: dict[str, str] | None, needs_l7: bool) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "selector": selector, "action": "ALLOW", "rules": [], "needsL7": needs_l7}


DUMP: dict[str, Any] = {
    "node": "node1",
    "workloads": [
        workload("web-a", "uid-a", {"app": "web"}),
        workload("db-a", "uid-db", {"app": "db"}),
        workload("legacy", "uid-l", {"app": "web"}, enrolled=False),
    ],
    "services": [
        {
            "name": "web",
            "namespace": "shop",
            "vips": ["10.96.0.10"],
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "admin", "port": 81, "targetPort": 9000, "protocol": "TCP", "appProtocol": "http"},
                {"name": "raw", "port": 9100, "targetPort": 9100, "protocol": "TCP"},
            ],
            "endpoints": [
                {
                    "workloadUid": "uid-a",
                    "ip": "10.0.0.1",
                    "ports": {"80": 8080, "81": 9000, "9100": 9100},
                    "ready": True,
                },
                {"workloadUid": "uid-l", "ip": "10.0.0.9", "ports": {"80": 8080}, "ready": True},
            ],
        },
        {
            "name": "db",
            "namespace": "shop",
            "vips": ["10.96.0.11"],
            "ports": [{"name": "tcp-pg", "port": 5432, "targetPort": 5432, "protocol": "TCP"}],
            "endpoints": [{"workloadUid": "uid-db", "ip": "10.0.0.2", "ports": {"5432": 5432}, "ready": True}],
        },
    ],
    "policies": {
        "authorization": [
            policy("shop", "web-paths", {"app": "web"}, True),
            policy("shop", "db-l4", {"app": "db"}, False),
            policy("meshlet-system", "mesh-wide-get-only", None, True),
            policy("other", "elsewhere", None, True),
        ],
        "peerAuthentication": [],
    },
}


def test_services_list_each_port_as_http_with_why_or_tcp() -> None:
    rows = {r["name"]: r for r in inspect.services(DUMP, None)}
    assert rows["web"]["ports"] == [80, 81, 9100]  # unchanged for scripts reading -o json
    assert rows["web"]["protocols"] == [
        {"port": 80, "protocol": "http", "reason": "port name http"},
        {"port": 81, "protocol": "http", "reason": "appProtocol: http"},
        {"port": 9100, "protocol": "tcp", "reason": None},
    ]
    assert inspect.cell(rows["web"], "protocols") == "80 http (port name http), 81 http (appProtocol: http), 9100 tcp"
    assert inspect.cell(rows["db"], "protocols") == "5432 tcp"


def test_workloads_list_their_l7_ports_from_services_and_policies() -> None:
    rows = {r["name"]: r for r in inspect.workloads(DUMP, None, None)}
    mesh_wide = {"port": None, "reason": "AuthorizationPolicy meshlet-system/mesh-wide-get-only has HTTP rules"}
    assert rows["web-a"]["l7"] == [
        {"port": 8080, "reason": "service shop/web port 80: port name http"},
        {"port": 9000, "reason": "service shop/web port 81: appProtocol: http"},
        mesh_wide,
        {"port": None, "reason": "AuthorizationPolicy shop/web-paths has HTTP rules"},
    ]
    assert rows["db-a"]["l7"] == [mesh_wide]  # its own policy is L4 only
    # Not enrolled: no ztunnel enforces policies in front of it, but clients still speak HTTP to its service port.
    assert rows["legacy"]["l7"] == [{"port": 8080, "reason": "service shop/web port 80: port name http"}]
    assert inspect.cell(rows["db-a"], "l7") == (
        "all ports (AuthorizationPolicy meshlet-system/mesh-wide-get-only has HTTP rules)"
    )
    assert ("L7", "l7") in inspect.COLUMNS["workloads"]


def test_a_mesh_without_http_shows_no_l7_ports() -> None:
    dump = {**DUMP, "policies": {"authorization": [], "peerAuthentication": []}}
    dump["services"] = [DUMP["services"][1]]
    rows = inspect.workloads(dump, "shop", None)
    assert all(r["l7"] == [] for r in rows)
    assert inspect.cell(rows[0], "l7") == "-"


def test_policies_show_their_rules_scope_and_where_they_are_enforced() -> None:
    dump = {**DUMP, "rootNamespace": "meshlet-system"}
    dump["policies"] = {
        "authorization": [
            {**policy("shop", "web-paths", {"app": "web"}, True), "rules": [{"to": [{"paths": ["/a*"]}]}]},
            policy("meshlet-system", "mesh-wide", None, False),
        ],
        "peerAuthentication": [
            {"name": "strict", "namespace": "shop", "selector": None, "mode": "STRICT", "portModes": {}},
        ],
    }
    rows = {r["name"]: r for r in inspect.policies(dump, None)}
    assert rows["web-paths"]["scope"] == "workloads of namespace shop with app=web"
    assert rows["web-paths"]["rules"] == [{"to": [{"paths": ["/a*"]}]}] and rows["web-paths"]["ruleCount"] == 1
    assert rows["web-paths"]["enforcedBy"] == "the destination's ztunnel, per request (L7)"
    assert rows["mesh-wide"]["scope"] == "the whole mesh"
    assert rows["mesh-wide"]["enforcedBy"] == "the destination's ztunnel, per connection (L4)"
    assert rows["strict"]["scope"] == "namespace shop" and inspect.cell(rows["strict"], "action") == "STRICT"
    assert [h for h, _ in inspect.COLUMNS["policies"]] == [
        "NAMESPACE", "KIND", "NAME", "SCOPE", "ACTION/MODE", "RULES", "ENFORCED BY",
    ]  # fmt: skip


def test_connections_name_the_workloads_and_identities_at_both_ends() -> None:
    conn = {"id": 7, "direction": "outbound", "connection": "10.0.0.1 -> 10.0.0.2:5432", "established": True,
            "sentBytes": 10, "receivedBytes": 20, "ageSeconds": 1.5}  # fmt: skip
    outside = {**conn, "id": 8, "connection": "10.0.0.1 -> 192.0.2.9:443"}
    web, db = workload("web-a", "uid-a", {}), {**workload("db-a", "uid-db", {}), "ips": ["10.0.0.2"]}
    dump = {**DUMP, "workloads": [web, db], "connections": [conn, outside]}
    first, second = inspect.connections(dump, None)
    assert (first["source"], first["destination"]) == ("shop/web-a", "shop/db-a")
    assert first["sourceIdentity"] == "spiffe://cluster.local/ns/shop/sa/default"
    assert (second["destination"], second["destinationIdentity"]) == (None, None)  # outside the mesh
    assert [r["id"] for r in inspect.connections(dump, "shop")] == [7, 8]
    assert inspect.connections(dump, "other") == []
    assert "RECEIVED: bytes from the client (the request)" in inspect.CAPTIONS["connections"]
