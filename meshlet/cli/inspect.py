"""What a node's ztunnel holds, as tables (`meshlet workloads|services|policies|certs|connections`),
in the manner of `istioctl ztunnel-config`. Each `rows_*` function turns ztunnel's /config_dump into
the stable JSON rows the `-o json|yaml` output prints; the table shows a subset of the same rows.
"""

from __future__ import annotations

from typing import Any

Rows = list[dict[str, Any]]


def workloads(dump: dict[str, Any], namespace: str | None, on_node: str | None) -> Rows:
    rows = [
        {"name": w["name"], "namespace": w["namespace"], "node": w["node"], "ips": w["ips"],
         "serviceAccount": w["service_account"], "identity": w["identity"], "enrolled": w["enrolled"]}
        for w in dump["workloads"]
    ]  # fmt: skip
    return [r for r in rows if namespace in (None, r["namespace"]) and on_node in (None, r["node"])]


def services(dump: dict[str, Any], namespace: str | None) -> Rows:
    rows = [
        {"name": s["name"], "namespace": s["namespace"], "vips": s["vips"],
         "ports": [p["port"] for p in s["ports"]],
         "endpoints": [{"ip": e["ip"], "ports": e["ports"], "ready": e["ready"]} for e in s["endpoints"]]}
        for s in dump["services"]
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["namespace"], r["name"]))
    return [r for r in rows if namespace in (None, r["namespace"])]


def policies(dump: dict[str, Any], namespace: str | None) -> Rows:
    rows = [
        {"kind": "AuthorizationPolicy", "name": p["name"], "namespace": p["namespace"], "selector": p["selector"],
         "action": p["action"], "rules": len(p["rules"]), "needsL7": p.get("needsL7", False)}
        for p in dump["policies"]["authorization"]
    ] + [
        {"kind": "PeerAuthentication", "name": p["name"], "namespace": p["namespace"], "selector": p["selector"],
         "mode": p["mode"], "portModes": p["portModes"]}
        for p in dump["policies"]["peerAuthentication"]
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["namespace"], r["kind"], r["name"]))
    return [r for r in rows if namespace in (None, r["namespace"])]


def certs(dump: dict[str, Any], namespace: str | None) -> Rows:
    rows = [
        {"identity": c["identity"], "notBefore": c.get("notBefore"), "notAfter": c["notAfter"], "error": c["error"]}
        for c in dump["certificates"]
    ]
    return [r for r in rows if namespace is None or f"/ns/{namespace}/" in r["identity"]]


def connections(dump: dict[str, Any], namespace: str | None) -> Rows:
    """Open proxied connections; with a namespace, those whose ends are that namespace's workload IPs."""
    rows: Rows = list(dump["connections"])
    if namespace is not None:
        ips = {ip for w in dump["workloads"] if w["namespace"] == namespace for ip in w["ips"]}
        rows = [r for r in rows if any(ip in r["connection"] for ip in ips)]
    return rows


COLUMNS: dict[str, list[tuple[str, str]]] = {
    "workloads": [("NAMESPACE", "namespace"), ("NAME", "name"), ("NODE", "node"), ("IPS", "ips"),
                  ("IDENTITY", "identity"), ("ENROLLED", "enrolled")],
    "services": [("NAMESPACE", "namespace"), ("NAME", "name"), ("VIPS", "vips"), ("PORTS", "ports"),
                 ("ENDPOINTS", "endpoints")],
    "policies": [("NAMESPACE", "namespace"), ("KIND", "kind"), ("NAME", "name"), ("SELECTOR", "selector"),
                 ("ACTION/MODE", "action")],
    "certs": [("IDENTITY", "identity"), ("NOT AFTER", "notAfter"), ("ERROR", "error")],
    "connections": [("ID", "id"), ("DIRECTION", "direction"), ("CONNECTION", "connection"),
                    ("SENT", "sentBytes"), ("RECEIVED", "receivedBytes"), ("AGE S", "ageSeconds")],
}  # fmt: skip


def cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "action" and value is None:
        value = row.get("mode")
    if key == "endpoints":
        return ", ".join(e["ip"] for e in value or []) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)
