"""`meshlet status`: one screen about a node, from its agent's status API and ztunnel's admin.

`gather` builds the report (also `-o json`, a stable shape for scripts); `problems` lists what is
unhealthy in words an operator can act on, and the command exits 1 when there is any. `warnings` are control's
(control/model/advice.py): valid objects that will not do what they look meant to (a policy that selects nothing,
Istio's labels with Istio compatibility off); they do not make the mesh unhealthy.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from meshlet.cli.endpoints import EndpointError, NodeEndpoints, agent_status, config_dump, control_status


def gather(ep: NodeEndpoints) -> dict[str, Any]:
    report: dict[str, Any] = {"node": ep.node, "lab": ep.lab, "problems": [], "warnings": []}
    problems: list[str] = report["problems"]
    try:
        agent: dict[str, Any] | None = agent_status(ep)
    except EndpointError as exc:
        agent = None
        problems.append(str(exc))
    try:
        dump: dict[str, Any] | None = config_dump(ep)
    except EndpointError as exc:
        dump = None
        problems.append(str(exc))
    report["node"] = (agent or {}).get("node") or (dump or {}).get("node") or ep.node
    report["redirect"] = {
        "backend": agent["backend"] if agent else None,
        "reason": agent.get("backendReason") if agent else None,
    }
    report["agent"] = _agent(agent, problems)
    report["ztunnel"] = _ztunnel(dump, agent, problems)
    report["control"] = _control(dump, problems)
    report["store"] = _store(ep, agent, problems, report["warnings"])
    report["pods"] = _pods(agent, problems)
    report["certificates"] = _certificates(dump, problems)
    bpf = (agent or {}).get("bpf", {})
    report["bpf"] = {"programs": bpf.get("programs", []), "maps": bpf.get("maps", []),
                     "counters": bpf.get("counters", {})}  # fmt: skip
    report["traffic"] = (dump or {}).get("traffic")
    report["healthy"] = not problems
    return report


def _agent(agent: dict[str, Any] | None, problems: list[str]) -> dict[str, Any]:
    if agent is None:
        return {"ok": False}
    store = agent["store"]
    down = [t for t in agent.get("tasks", []) if t.get("downSince") is not None]
    for t in down:
        problems.append(
            f"the agent's {t['name']} task is down ({t['lastError']}); restarting it (restarted {t['restarts']} "
            "times so far): changes to the store may not be acted on meanwhile"
        )
    return {
        "ok": not down,
        "uptimeSeconds": round(time.time() - float(agent["startedAt"]), 1),
        "store": {
            "path": store["path"],
            "synced": store["synced"],
            "version": store["version"],
            "errors": store["errors"],
        },  # fmt: skip
        "ztunnelConnected": agent["ztunnel"]["connected"],
        "tasks": agent.get("tasks", []),
    }


def _ztunnel(dump: dict[str, Any] | None, agent: dict[str, Any] | None, problems: list[str]) -> dict[str, Any]:
    if agent is not None and not agent["ztunnel"]["connected"]:
        problems.append("the agent has no ztunnel connected on its ZDS socket: enrolled pods stay pending")
    if dump is None:
        return {"ok": False, "ready": False}
    if not dump["ready"]:
        problems.append(f"ztunnel is not ready: {'; '.join(dump['problems'])}")
    return {
        "ok": bool(dump["ready"]),
        "ready": dump["ready"],
        "zdsConnected": dump["zds"]["connected"],
        "servedPods": len(dump["pods"]),
        "listenerErrors": [f"{p['namespace']}/{p['name']}: {p['error']}" for p in dump["pods"] if p.get("error")],
    }


def _store(ep: NodeEndpoints, agent: dict[str, Any] | None, problems: list[str], warnings: list[str]) -> dict[str, Any]:
    """Every error in the store, each a problem: control's (it reads every object) where its operator port is known,
    else the agent's (which reads only Namespaces and its node's Pods)."""
    try:
        control = control_status(ep)
    except EndpointError as exc:
        control = None
        problems.append(str(exc))
    if control is not None:
        errors = [": ".join(str(e[k]) for k in ("origin", "object", "reason") if e.get(k)) for e in control["errors"]]
        seen_by = "control"
        warnings.extend(f"{w['object']}: {w['message']}" for w in control.get("warnings", []))  # since 2026-11-29
        _same_labels(agent, control, problems)
    else:
        errors = list((agent or {}).get("store", {}).get("errors", []))
        seen_by = "agent"
    problems.extend(f"invalid in the store ({seen_by}): {e}" for e in errors)
    return {"errors": errors, "seenBy": seen_by}


def _same_labels(agent: dict[str, Any] | None, control: dict[str, Any], problems: list[str]) -> None:
    """Control decides which workloads it sends as enrolled, the agent which pods it captures: by other labels (one
    of them without --istio-compat), a pod only one enrolls is either known as enrolled but not captured (its
    traffic passes the mesh by) or captured but sent as not enrolled."""
    ours, theirs = (agent or {}).get("dataplaneLabels"), control.get("dataplaneLabels")  # since 2026-11-29
    if ours is not None and theirs is not None and ours != theirs:
        problems.append(
            f"the agent enrolls by {', '.join(ours)} but control by {', '.join(theirs)}: give both the same "
            "--istio-compat (and --dataplane-label)"
        )


def _control(dump: dict[str, Any] | None, problems: list[str]) -> dict[str, Any]:
    if dump is None:
        return {"ok": False, "connected": None}
    config = dump["config"]
    updated = config.get("updatedAt")
    age = round(time.time() - float(updated), 1) if updated else None
    if not config["connected"]:
        problems.append(
            f"ztunnel is not connected to control at {config['url']} ({config.get('lastError') or 'connecting'}); "
            "it keeps serving its last config"
        )
    return {
        "ok": bool(config["connected"]),
        "connected": config["connected"],
        "url": config["url"],
        "configVersion": config["version"],
        "configAgeSeconds": age,
        "lastError": config.get("lastError"),
    }


def _pods(agent: dict[str, Any] | None, problems: list[str]) -> dict[str, Any]:
    if agent is None:
        return {"total": None}
    pods = agent["pods"]
    enrolled = [p for p in pods if p["enrolled"]]
    by_state = {s: [p for p in enrolled if p["state"] == s] for s in ("captured", "pending", "error")}
    errors = [{"pod": f"{p['namespace']}/{p['name']}", "reason": p["reason"]} for p in by_state["error"]]
    for e in errors:
        problems.append(f"pod {e['pod']} could not be enrolled: {e['reason']}")
    if by_state["pending"]:
        names = ", ".join(f"{p['namespace']}/{p['name']}" for p in by_state["pending"])
        problems.append(f"pods waiting for ztunnel to take them (pending): {names}")
    return {
        "total": len(pods),
        "enrolled": len(enrolled),
        "captured": len(by_state["captured"]),
        "pending": len(by_state["pending"]),
        "errors": errors,
    }


def _certificates(dump: dict[str, Any] | None, problems: list[str]) -> dict[str, Any]:
    if dump is None:
        return {"count": None}
    certs = dump["certificates"]
    expiries = sorted(c["notAfter"] for c in certs if c.get("notAfter"))
    for c in certs:
        if c.get("error"):
            problems.append(f"certificate for {c['identity']}: {c['error']}")
    soonest = expiries[0] if expiries else None
    if soonest and datetime.fromisoformat(soonest) <= datetime.now(UTC):
        problems.append(f"a workload certificate expired at {soonest}")
    return {"count": len([c for c in certs if c.get("notAfter")]), "soonestExpiry": soonest}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def lab_report(reports: list[dict[str, Any]], lab: str) -> dict[str, Any]:
    """Every node's report, then the problems: one a node alone has is named with its node, one every node
    has (a store error, control down) is listed once."""
    counts: dict[str, int] = {}
    for report in reports:
        for problem in dict.fromkeys(report["problems"]):
            counts[problem] = counts.get(problem, 0) + 1
    shared = [p for p, n in counts.items() if n == len(reports)]
    problems = shared + [f"{r['node']}: {p}" for r in reports for p in r["problems"] if p not in shared]
    warnings = list(dict.fromkeys(w for r in reports for w in r["warnings"]))  # control's: the same for every node
    return {"lab": lab, "healthy": not problems, "nodes": reports, "problems": problems, "warnings": warnings}


def lines(report: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(label, text, ok) rows for the human screen; ok None is neutral information."""
    agent, zt, control = report["agent"], report["ztunnel"], report["control"]
    pods, certs, traffic = report["pods"], report["certificates"], report["traffic"]
    rows: list[tuple[str, str, bool | None]] = [
        ("Node", f"{report['node']}" + (f" (lab {report['lab']})" if report["lab"] else ""), None)
    ]
    rows.append(("Redirection", f"{report['redirect']['backend']} ({report['redirect']['reason']})"
                 if report["redirect"]["backend"] else "unknown (agent unreachable)", None))  # fmt: skip
    down = "".join(f", {t['name']} task DOWN" for t in agent.get("tasks", []) if t.get("downSince") is not None)
    rows.append(("Agent", f"up {agent['uptimeSeconds']:.0f}s, store version {agent['store']['version']}{down}"
                 if "uptimeSeconds" in agent else "unreachable", agent["ok"]))  # fmt: skip
    rows.append(("ztunnel", f"{'ready' if zt['ready'] else 'NOT READY'}, ZDS "
                 f"{'connected' if zt['zdsConnected'] else 'disconnected'}, {zt['servedPods']} pods served"
                 if zt.get("zdsConnected") is not None else "unreachable", zt["ok"]))  # fmt: skip
    if control.get("connected") is not None:
        age = f", {control['configAgeSeconds']:.0f}s old" if control["configAgeSeconds"] is not None else ""
        rows.append(("Control", f"{'connected' if control['connected'] else 'DISCONNECTED'} {control['url']}, "
                     f"config version {control['configVersion']}{age}", control["ok"]))  # fmt: skip
    else:
        rows.append(("Control", "unknown (ztunnel unreachable)", False))
    if pods.get("total") is not None:
        rows.append(("Pods", f"{pods['enrolled']}/{pods['total']} enrolled: {pods['captured']} captured, "
                     f"{pods['pending']} pending, {len(pods['errors'])} errors",
                     not pods["errors"] and not pods["pending"]))  # fmt: skip
    if certs.get("count") is not None:
        rows.append(("Certificates", f"{certs['count']}, soonest expiry {certs['soonestExpiry'] or '-'}", None))
    programs = report["bpf"]["programs"]
    rows.append(("BPF programs", ", ".join(f"{p['name']} ({p['attach']})" for p in programs) if programs
                 else "none", None))  # fmt: skip
    if traffic:
        src, dst = traffic["source"], traffic["destination"]
        rows.append(("Traffic", f"{traffic['openConnections']} open; outbound {src['connections']} closed "
                     f"({human_bytes(src['receivedBytes'])} requests, {human_bytes(src['sentBytes'])} responses); "
                     f"inbound {dst['connections']} closed ({human_bytes(dst['receivedBytes'])} requests, "
                     f"{human_bytes(dst['sentBytes'])} responses); {traffic['errors']} failed", None))  # fmt: skip
    return rows
