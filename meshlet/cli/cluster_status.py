"""`meshlet status --kubeconfig ...`: the whole cluster install on one screen (like `cilium status`).

From the API server: the control Deployment (ready/desired), the node DaemonSet (desired, ready, updated,
available), and per node its meshlet-node pod (phase, ready containers, restarts). From control itself, through
the API server's service proxy (`/api/v1/namespaces/<ns>/services/meshlet-control:15014/proxy/debug/status`,
so no port-forward is needed): the config stream's connected proxies and the objects control rejected. Keys are
camelCase for `-o json`; `problems` says what is unhealthy, and the command exits 1 when there is any.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshlet.cli.kubecli import read, typed_api

CONTROL = "meshlet-control"
NODE = "meshlet-node"
OPS_PORT = 15014


def _get(call: Any, *args: Any) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = read(call, *args)
        return found
    except ApiException as exc:
        if exc.status != 404:
            raise
        return None


def _deployment(apps: Any, namespace: str, problems: list[str]) -> dict[str, Any]:
    d = _get(apps.read_namespaced_deployment, CONTROL, namespace)
    if d is None:
        problems.append(f"no Deployment {namespace}/{CONTROL}: is meshlet installed (meshlet install)?")
        return {"found": False}
    desired = d.get("spec", {}).get("replicas", 1)
    ready = (d.get("status") or {}).get("readyReplicas", 0)
    if ready < desired:
        problems.append(f"control: {ready}/{desired} replicas ready")
    return {"found": True, "desired": desired, "ready": ready}


def _daemonset(apps: Any, namespace: str, problems: list[str]) -> dict[str, Any]:
    ds = _get(apps.read_namespaced_daemon_set, NODE, namespace)
    if ds is None:
        problems.append(f"no DaemonSet {namespace}/{NODE}: is meshlet installed (meshlet install)?")
        return {"found": False}
    s = ds.get("status") or {}
    counts = {
        "desired": s.get("desiredNumberScheduled", 0),
        "ready": s.get("numberReady", 0),
        "updated": s.get("updatedNumberScheduled", 0),
        "available": s.get("numberAvailable", 0),
    }
    if counts["ready"] < counts["desired"]:
        problems.append(f"nodes: {counts['ready']}/{counts['desired']} meshlet-node pods ready")
    return {"found": True, **counts}


def _pods(core: Any, namespace: str, problems: list[str]) -> list[dict[str, Any]]:
    pods = read(core.list_namespaced_pod, namespace, label_selector=f"app.kubernetes.io/name={NODE}")["items"]
    out = []
    for pod in sorted(pods, key=lambda p: (p["spec"].get("nodeName") or "", p["metadata"]["name"])):
        status = pod.get("status") or {}
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        want = len(pod["spec"].get("containers") or [])
        row = {
            "node": pod["spec"].get("nodeName"),
            "pod": pod["metadata"]["name"],
            "phase": status.get("phase"),
            "ready": f"{ready}/{want}",
            "restarts": sum(int(c.get("restartCount", 0)) for c in statuses),
        }
        if row["phase"] != "Running" or ready < want:
            problems.append(f"node {row['node']}: pod {row['pod']} is {row['phase']}, {row['ready']} ready")
        out.append(row)
    return out


def _control(core: Any, namespace: str, problems: list[str], warnings: list[str]) -> dict[str, Any]:
    try:
        raw = core.connect_get_namespaced_service_proxy_with_path(
            f"{CONTROL}:{OPS_PORT}", namespace, "debug/status", _preload_content=False, _request_timeout=10
        )
        status = json.loads(raw.data)
    except ApiException as exc:
        problems.append(f"control's /debug/status through the service proxy: HTTP {exc.status} {exc.reason}")
        return {"reachable": False}
    except ValueError as exc:
        problems.append(f"control's /debug/status is not JSON: {exc}")
        return {"reachable": False}
    errors = status.get("errors") or []
    for e in errors[:5]:
        problems.append(f"control rejected {e.get('object')}: {e.get('reason')}")
    if len(errors) > 5:
        problems.append(f"... and {len(errors) - 5} more objects rejected by control")
    proxies = status.get("proxies") or []
    warnings.extend(f"{w.get('object')}: {w.get('message')}" for w in status.get("warnings") or [])
    return {
        "reachable": True,
        "source": status.get("source"),
        "synced": status.get("synced"),
        "configVersion": status.get("version"),
        "proxies": [{"node": p.get("node"), "ackedVersion": p.get("ackedVersion")} for p in proxies],
        "errors": errors,
    }


def gather(api: Any, namespace: str = "meshlet-system") -> dict[str, Any]:
    apps, core = typed_api(client.AppsV1Api, api), typed_api(client.CoreV1Api, api)
    problems: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"namespace": namespace}
    report["control"] = _deployment(apps, namespace, problems)
    report["daemonSet"] = _daemonset(apps, namespace, problems)
    report["nodes"] = _pods(core, namespace, problems)
    report["controlStatus"] = _control(core, namespace, problems, warnings) if report["control"]["found"] else None
    connected = {p["node"] for p in (report["controlStatus"] or {}).get("proxies", [])}
    for row in report["nodes"]:
        row["connectedToControl"] = row["node"] in connected if report["controlStatus"] else None
    report["problems"] = problems
    report["warnings"] = warnings
    report["healthy"] = not problems
    return report


def rows(report: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(label, text, ok) rows for the table."""
    out: list[tuple[str, str, bool | None]] = []
    c, ds = report["control"], report["daemonSet"]
    out.append(
        (
            "Control",
            f"{c['ready']}/{c['desired']} ready" if c["found"] else "not installed",
            c["found"] and c["ready"] >= c["desired"],
        )
    )
    out.append(
        (
            "DaemonSet",
            f"desired {ds['desired']}, ready {ds['ready']}, updated {ds['updated']}, available {ds['available']}"
            if ds["found"]
            else "not installed",
            ds["found"] and ds["ready"] >= ds["desired"],
        )
    )
    cs = report["controlStatus"]
    if cs is not None:
        text = (
            (
                f"{len(cs['proxies'])} proxies connected, config version {cs['configVersion']}, "
                f"{len(cs['errors'])} rejected objects"
            )
            if cs["reachable"]
            else "unreachable"
        )
        out.append(("Control status", text, cs["reachable"] and not cs["errors"]))
    for n in report["nodes"]:
        link = {True: ", connected to control", False: ", NOT connected to control", None: ""}[n["connectedToControl"]]
        text = f"{n['pod']} {n['phase']}, {n['ready']} ready, {n['restarts']} restarts{link}"
        out.append((f"Node {n['node']}", text, n["phase"] == "Running" and n["connectedToControl"] is not False))
    return out
