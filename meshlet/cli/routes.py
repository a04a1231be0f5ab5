"""`meshlet routes`: the HTTPRoutes a node's ztunnel holds, per Service they attach to, from its /config_dump.

One row per (parent Service, route): its rules (matches, filters, weighted backends, timeouts, retry) and the
status conditions control computed for that parent (Accepted, ResolvedRefs). Rows of a Service come in route
precedence order (oldest route first, then `namespace/name`), the order that breaks ties between equal matches.
"""

from __future__ import annotations

from typing import Any

Rows = list[dict[str, Any]]

COLUMNS = [("SERVICE", "service"), ("PORT", "routePort"), ("ROUTE", "route"), ("RULES", "rules"),
           ("STATUS", "conditions")]  # fmt: skip
CELL_KEYS = frozenset(key for _, key in COLUMNS)


def rows(dump: dict[str, Any], namespace: str | None) -> Rows:
    """With a namespace: the routes attached to that namespace's Services or living in it."""
    out: Rows = []
    ordered = sorted(dump.get("routes", []), key=lambda r: (not r["creationTimestamp"], r["creationTimestamp"],
                                                             r["namespace"], r["name"]))  # fmt: skip
    for route in ordered:
        status = {_service(s["parentRef"]) + f":{s['parentRef']['port']}": s["conditions"] for s in route["status"]}
        for parent in route["parentRefs"]:
            service = _service(parent)
            out.append({
                "service": service,
                "routePort": parent["port"],
                "route": f"{route['namespace']}/{route['name']}",
                "namespace": route["namespace"],
                "created": route["creationTimestamp"] or None,
                "rules": [_rule(rule) for rule in route["rules"]],
                "conditions": status.get(f"{service}:{parent['port']}", []),
            })  # fmt: skip
    out.sort(key=lambda r: r["service"])  # stable: precedence order within a Service
    if namespace is None:
        return out
    return [r for r in out if namespace in (r["namespace"], r["service"].partition("/")[0])]


def cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key == "routePort":
        return "all" if value is None else str(value)
    if key == "rules":  # PathPrefix /api GET -> shop/v1:80 (90), shop/v2:80 (10); Exact /x -> redirect
        return "; ".join(_rule_text(rule) for rule in value or []) or "-"
    if key == "conditions":  # Accepted=True, ResolvedRefs=False (BackendNotFound)
        return ", ".join(_condition_text(c) for c in value or []) or "-"
    return "-" if value is None else str(value)


def _service(ref: dict[str, Any]) -> str:
    return f"{ref['namespace']}/{ref['name']}"


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": rule.get("name") or None,
        "matches": [_match_text(m) for m in rule["matches"]],
        "filters": [f["type"] for f in rule["filters"]],
        "backends": [{"service": _service(b), "port": b["port"], "weight": b["weight"]} for b in rule["backendRefs"]],
        "timeouts": rule["timeouts"],
        "retry": rule["retry"],
    }


def _match_text(match: dict[str, Any]) -> str:
    parts = [f"{match['path']['type']} {match['path']['value']}"]
    if match.get("method"):
        parts.append(match["method"])
    parts += [f"header {h['name']}{'~' if h['type'] != 'Exact' else '='}{h['value']}" for h in match["headers"]]
    parts += [f"query {q['name']}{'~' if q['type'] != 'Exact' else '='}{q['value']}" for q in match["queryParams"]]
    return " ".join(parts)


def _rule_text(rule: dict[str, Any]) -> str:
    total = sum(b["weight"] for b in rule["backends"])
    backends = ", ".join(
        f"{b['service']}:{b['port']}" + (f" ({b['weight']})" if len(rule["backends"]) > 1 or total == 0 else "")
        for b in rule["backends"]
    )
    target = backends or ("redirect" if "RequestRedirect" in rule["filters"] else "no backend (500)")
    filters = [f for f in rule["filters"] if f != "RequestRedirect"]
    return f"{' | '.join(rule['matches'])} -> {target}" + (f" [{', '.join(filters)}]" if filters else "")


def _condition_text(condition: dict[str, Any]) -> str:
    text = f"{condition['type']}={condition['status']}"
    return text if condition["status"] == "True" else f"{text} ({condition['reason']})"
