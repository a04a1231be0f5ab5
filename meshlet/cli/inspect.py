"""What a node's ztunnel holds, as tables (`meshlet workloads|services|policies|certs|connections`),
in the manner of `istioctl ztunnel-config`. Each `rows_*` function turns ztunnel's /config_dump into
the stable JSON rows the `-o json|yaml` output prints; the table shows a subset of the same rows.
"""

from __future__ import annotations

from typing import Any

from meshlet.cli import routes
from meshlet_contracts.mesh_config import ROOT_NAMESPACE
from meshlet_contracts.protocols import http_ports

Rows = list[dict[str, Any]]


def _roots(dump: dict[str, Any]) -> tuple[str, ...]:
    """The namespaces whose policies apply to every workload of the mesh, as the ztunnel holds them."""
    if "rootNamespaces" in dump:
        return tuple(dump["rootNamespaces"])
    # ztunnels before 2026-11-29 held one root, and those before 11-28 did not say which
    return (dump.get("rootNamespace", ROOT_NAMESPACE),)


def workloads(dump: dict[str, Any], namespace: str | None, on_node: str | None) -> Rows:
    """`l7` lists the ports connections into the workload are handled at L7 on, each with why; a `port` of null
    means every port (a policy with HTTP rules selects the workload)."""
    targets = _http_targets(dump["services"])
    root = _roots(dump)
    rows = [
        {"name": w["name"], "namespace": w["namespace"], "node": w["node"], "ips": w["ips"],
         "serviceAccount": w["service_account"], "identity": w["identity"], "enrolled": w["enrolled"],
         "l7": targets.get(w["uid"], []) + _l7_policies(w, dump["policies"]["authorization"], root)}
        for w in dump["workloads"]
    ]  # fmt: skip
    return [r for r in rows if namespace in (None, r["namespace"]) and on_node in (None, r["node"])]


def services(dump: dict[str, Any], namespace: str | None) -> Rows:
    rows = [
        {"name": s["name"], "namespace": s["namespace"], "vips": s["vips"],
         "ports": [p["port"] for p in s["ports"]], "protocols": _protocols(s["ports"]),
         "endpoints": [{"ip": e["ip"], "ports": e["ports"], "ready": e["ready"]} for e in s["endpoints"]]}
        for s in dump["services"]
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["namespace"], r["name"]))
    return [r for r in rows if namespace in (None, r["namespace"])]


def _protocols(ports: list[Any]) -> Rows:
    """Each port's protocol as the proxy treats it (`http` with why, or `tcp`), in the service's port order."""
    http = http_ports(ports)  # the dump holds the config stream's service items as they came
    return [
        {"port": p["port"], "protocol": "http" if p["port"] in http else "tcp", "reason": http.get(p["port"])}
        for p in ports
    ]


def _http_targets(services: list[dict[str, Any]]) -> dict[str, Rows]:
    """Workload uid -> its ports some service maps an HTTP port to, with the first such service as the reason."""
    found: dict[tuple[str, int], str] = {}
    for s in sorted(services, key=lambda s: (s["namespace"], s["name"])):
        http = http_ports(s["ports"])
        for e in s["endpoints"]:
            for service_port, pod_port in e["ports"].items():
                if (reason := http.get(int(service_port))) is not None:
                    where = f"service {s['namespace']}/{s['name']} port {service_port}"
                    found.setdefault((e["workloadUid"], pod_port), f"{where}: {reason}")
    out: dict[str, Rows] = {}
    for (uid, pod_port), reason in sorted(found.items()):
        out.setdefault(uid, []).append({"port": pod_port, "reason": reason})
    return out


def _l7_policies(workload: dict[str, Any], authorization: list[dict[str, Any]], root: tuple[str, ...]) -> Rows:
    """The AuthorizationPolicies with HTTP rules that select an enrolled workload: the ports those rules may apply
    to are then L7 (shown as every port: the dump's policy summary does not say which)."""
    if not workload["enrolled"]:
        return []  # no ztunnel in front of it to enforce them
    labels = workload.get("labels") or {}
    return [
        {"port": None, "reason": f"AuthorizationPolicy {p['namespace']}/{p['name']} has HTTP rules"}
        for p in sorted(authorization, key=lambda p: (p["namespace"], p["name"]))
        if p.get("needsL7")
        and (p["namespace"] == workload["namespace"] or p["namespace"] in root)
        and all(labels.get(k) == v for k, v in (p.get("selector") or {}).items())
    ]


def policies(dump: dict[str, Any], namespace: str | None) -> Rows:
    """Each policy with its rules (whole in -o json|yaml), what it applies to (`scope`) and where it is enforced:
    every policy by the ztunnel in front of the destination, an AuthorizationPolicy with HTTP rules per request
    (L7), the others per connection."""
    root = _roots(dump)
    rows = [
        {"kind": "AuthorizationPolicy", "name": p["name"], "namespace": p["namespace"], "selector": p["selector"],
         "scope": _scope(p, root), "action": p["action"], "rules": p["rules"], "ruleCount": len(p["rules"]),
         "needsL7": p.get("needsL7", False),
         "enforcedBy": "the destination's ztunnel, "
                       + ("per request (L7)" if p.get("needsL7") else "per connection (L4)")}
        for p in dump["policies"]["authorization"]
    ] + [
        {"kind": "PeerAuthentication", "name": p["name"], "namespace": p["namespace"], "selector": p["selector"],
         "scope": _scope(p, root, peer_auth=True), "mode": p["mode"], "portModes": p["portModes"],
         "enforcedBy": "the destination's ztunnel, on connections in"}
        for p in dump["policies"]["peerAuthentication"]
    ]  # fmt: skip
    rows.sort(key=lambda r: (r["namespace"], r["kind"], r["name"]))
    return [r for r in rows if namespace in (None, r["namespace"])]


def _scope(policy: dict[str, Any], root: tuple[str, ...], peer_auth: bool = False) -> str:
    selector = policy.get("selector")
    # A root's PeerAuthentication with a selector applies in the root namespace only (as Istio's).
    mesh_wide = policy["namespace"] in root and not (peer_auth and selector)
    where = "the whole mesh" if mesh_wide else f"namespace {policy['namespace']}"
    if not selector:
        return where
    return f"workloads of {where} with " + ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def certs(dump: dict[str, Any], namespace: str | None) -> Rows:
    """One row per certificate of each identity's chain, the root included (`role`), with its serial, validity
    window and state (valid, expiring, expired, not yet valid); an identity without a certificate yet is one row
    with its error."""
    rows: Rows = []
    for c in dump["certificates"]:
        head = {"identity": c["identity"], "error": c["error"]}
        chain = c.get("chain") or []  # ztunnels before 2026-11-29 sent no chain
        if not chain:
            rows.append({**head, "role": "leaf", "serial": None, "notBefore": c.get("notBefore"),
                         "notAfter": c["notAfter"], "state": None})  # fmt: skip
        rows += [{**head, **entry} for entry in chain]
    return [r for r in rows if namespace is None or f"/ns/{namespace}/" in r["identity"]]


def connections(dump: dict[str, Any], namespace: str | None) -> Rows:
    """Open proxied connections with the workloads and identities at both ends; with a namespace, those with an end
    in it. `sentBytes` went towards the client (the response), `receivedBytes` came from it (the request), as
    istio_tcp_sent_bytes_total and istio_tcp_received_bytes_total count them."""
    by_ip = {ip: w for w in dump["workloads"] for ip in w["ips"]}
    rows: Rows = []
    for conn in dump["connections"]:
        source, _, destination = str(conn["connection"]).partition(" -> ")
        ends = {}
        for end, address in (("source", source), ("destination", destination)):
            w = by_ip.get(_host(address.strip()))
            ends[end] = f"{w['namespace']}/{w['name']}" if w else None
            ends[f"{end}Identity"] = w["identity"] if w and w.get("enrolled") else None
        rows.append({**conn, **ends})
    if namespace is not None:
        rows = [r for r in rows if any((r[e] or "").startswith(f"{namespace}/") for e in ("source", "destination"))]
    return rows


def _host(address: str) -> str:
    """The IP of `ip`, `ip:port` or `[v6]:port` (ztunnel writes the source without its port)."""
    if address.startswith("["):
        return address[1 : address.find("]")]
    return address.partition(":")[0] if address.count(":") == 1 else address


CAPTIONS = {
    "connections": "SENT: bytes towards the client (the response); RECEIVED: bytes from the client (the request), "
    "as istio_tcp_sent_bytes_total and istio_tcp_received_bytes_total count them.",
}


COLUMNS: dict[str, list[tuple[str, str]]] = {
    "workloads": [("NAMESPACE", "namespace"), ("NAME", "name"), ("NODE", "node"), ("IPS", "ips"),
                  ("IDENTITY", "identity"), ("ENROLLED", "enrolled"), ("L7", "l7")],
    "services": [("NAMESPACE", "namespace"), ("NAME", "name"), ("VIPS", "vips"), ("PORTS", "protocols"),
                 ("ENDPOINTS", "endpoints")],
    "policies": [("NAMESPACE", "namespace"), ("KIND", "kind"), ("NAME", "name"), ("SCOPE", "scope"),
                 ("ACTION/MODE", "action"), ("RULES", "ruleCount"), ("ENFORCED BY", "enforcedBy")],
    "routes": routes.COLUMNS,
    "certs": [("IDENTITY", "identity"), ("CERT", "role"), ("SERIAL", "serial"), ("NOT BEFORE", "notBefore"),
              ("NOT AFTER", "notAfter"), ("STATE", "state"), ("ERROR", "error")],
    "connections": [("ID", "id"), ("DIRECTION", "direction"), ("FROM", "source"), ("TO", "destination"),
                    ("CONNECTION", "connection"), ("SENT", "sentBytes"), ("RECEIVED", "receivedBytes"),
                    ("AGE S", "ageSeconds")],
}  # fmt: skip


def cell(row: dict[str, Any], key: str) -> str:
    if key in routes.CELL_KEYS:
        return routes.cell(row, key)
    value = row.get(key)
    if key == "action" and value is None:
        value = row.get("mode")
    if key == "endpoints":
        return ", ".join(e["ip"] for e in value or []) or "-"
    if key == "protocols":  # 80 http (port name http), 9000 tcp
        return ", ".join(_with_reason(f"{p['port']} {p['protocol']}", p["reason"]) for p in value or []) or "-"
    if key == "l7":  # 8080 (service shop/web port 80: port name http), all ports (AuthorizationPolicy ...)
        return ", ".join(_with_reason(str(p["port"] or "all ports"), p["reason"]) for p in value or []) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _with_reason(text: str, reason: str | None) -> str:
    return f"{text} ({reason})" if reason else text
