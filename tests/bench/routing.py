"""Scenario G's traffic management: E's Service with an HTTPRoute and TrafficPolicies in force (issue #15).

G measures what routing costs per request: the same client, Service and server as E, with objects a user
would write for a canary in force before the first request. The HTTPRoute attaches to `bench-http`
(GAMMA: `parentRefs: [{group: "", kind: Service}]`) and holds three rules, so every request is matched
against a header, a path prefix and the default:
- `x-bench-canary: "true"` -> `bench-http-v2`;
- PathPrefix `/api` -> `bench-http-v1`;
- everything else (wrk's `/1k`) -> `bench-http-v1` (80) / `bench-http-v2` (20), with a
  RequestHeaderModifier;
and each rule has `timeouts.request: 10s` and `retry: {attempts: 2, codes: [503]}`. The two backend Services
select the same single server pod as `bench-http` (services.py), so the path stays node1 -> node2 and only
the per-request work differs from E. A TrafficPolicy per Service (the parent and both backends) sets
LEAST_REQUEST, outlier detection, and connection-pool and rate limits far above anything the benchmark
reaches (10,000 held connections, some thousands of requests per second): in force, never triggered.

The objects go in with `meshlet lab apply -f`, as a user's would; G starts only once the client node's
ztunnel holds them (its /config_dump: the route Accepted with its refs resolved, the policies, the backends
with their endpoint), see `pending`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.bench import nginx
from tests.bench.lab import BenchError, Lab
from tests.bench.services import HTTP_SERVICE, HTTP_SERVICE_PORT, ROLE_LABEL

ROUTE = "bench-route"
BACKENDS = (("bench-http-v1", 80), ("bench-http-v2", 20))
"""The default rule's backend Services and their weights."""
CANARY_HEADER = "x-bench-canary"
API_PREFIX = "/api"
ROUTE_HEADER = "x-bench-route"
"""Set by the default rule's RequestHeaderModifier."""
NEVER = 1_000_000
"""A limit no workload of the benchmark comes near (requests per second, connections, pending requests)."""
TIMEOUT, RETRY = "10s", {"attempts": 2, "codes": [503]}

ZTUNNEL_CONFIG_DUMP = "http://127.0.0.1:15000/config_dump"
"""ztunnel's admin endpoint, from inside its node's netns (`meshlet routes` reads the same)."""


def backend_services(namespace: str) -> list[dict[str, Any]]:
    """The route's backends: HTTP Services like `bench-http` selecting the same pod; `lab apply` gives them VIPs."""
    port = {"name": "http", "appProtocol": "http", "port": HTTP_SERVICE_PORT, "targetPort": nginx.L7_PORT}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {ROLE_LABEL: "server"}, "ports": [{**port, "protocol": "TCP"}]},
        }
        for name, _ in BACKENDS
    ]


def route_object(namespace: str) -> dict[str, Any]:
    """The HTTPRoute on `bench-http`: header rule, path-prefix rule, weighted default; timeout and retry on each."""

    def backend(name: str, weight: int | None = None) -> dict[str, Any]:
        ref: dict[str, Any] = {"kind": "Service", "name": name, "port": HTTP_SERVICE_PORT}
        return ref if weight is None else {**ref, "weight": weight}

    common = {"timeouts": {"request": TIMEOUT}, "retry": dict(RETRY)}
    (v1, _), (v2, _) = BACKENDS
    modifier = {"set": [{"name": ROUTE_HEADER, "value": "default"}], "remove": ["x-bench-debug"]}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": namespace},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": HTTP_SERVICE, "port": HTTP_SERVICE_PORT}],
            "rules": [
                {
                    "matches": [{"headers": [{"name": CANARY_HEADER, "value": "true"}]}],
                    "backendRefs": [backend(v2)],
                    **common,
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": API_PREFIX}}],
                    "backendRefs": [backend(v1)],
                    **common,
                },
                {
                    "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": modifier}],
                    "backendRefs": [backend(name, weight) for name, weight in BACKENDS],
                    **common,
                },
            ],
        },
    }


def policy_objects(namespace: str) -> list[dict[str, Any]]:
    """One TrafficPolicy per Service a request may go to (the parent and both backends); limits never reached."""
    spec = {
        "loadBalancer": {"simple": "LEAST_REQUEST"},
        "connectionPool": {
            "tcp": {"maxConnections": NEVER},
            "http": {"http1MaxPendingRequests": NEVER, "maxRetries": NEVER},
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5,
            "consecutiveGatewayErrors": 5,
            "interval": "10s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 50,
        },
        "rateLimit": {"requestsPerUnit": NEVER, "unit": "second", "burst": NEVER},
    }
    return [
        {
            "apiVersion": "networking.meshlet.io/v1",
            "kind": "TrafficPolicy",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {"targetRef": {"group": "", "kind": "Service", "name": service}, **spec},
        }
        for service in services()
    ]


def services() -> list[str]:
    """The Services G's policies target: the route's parent, then its backends."""
    return [HTTP_SERVICE, *(name for name, _ in BACKENDS)]


def manifests(namespace: str) -> list[dict[str, Any]]:
    return [*backend_services(namespace), route_object(namespace), *policy_objects(namespace)]


def pending(dump: Mapping[str, Any], namespace: str) -> str | None:
    """What a ztunnel's /config_dump still lacks for G (a sentence), or None once everything is in force."""
    route = next((r for r in dump.get("routes", []) if (r["namespace"], r["name"]) == (namespace, ROUTE)), None)
    if route is None:
        return f"HTTPRoute {namespace}/{ROUTE} not in the config"
    conditions = [c for s in route.get("status", []) for c in s.get("conditions", [])]
    for kind in ("Accepted", "ResolvedRefs"):
        found = next((c for c in conditions if c["type"] == kind), None)
        if found is None or found["status"] != "True":
            why = "no condition" if found is None else f"{found['status']} ({found['reason']}: {found['message']})"
            return f"HTTPRoute {namespace}/{ROUTE} {kind}: {why}"
    policies = {(p["namespace"], p["name"]) for p in dump.get("policies", {}).get("traffic", [])}
    by_name = {(s["namespace"], s["name"]): s for s in dump.get("services", [])}
    for name in services():
        if (namespace, name) not in policies:
            return f"TrafficPolicy {namespace}/{name} not in the config"
        if not by_name.get((namespace, name), {}).get("endpoints"):
            return f"Service {namespace}/{name} not in the config or without an endpoint"
    return None


def apply(lab: Lab, namespace: str, workdir: Path) -> None:
    """`meshlet lab apply -f` the backend Services, the route and the policies (written to workdir first)."""
    path = workdir / "bench-routing.yaml"
    path.write_text(yaml.safe_dump_all(manifests(namespace), sort_keys=False))
    proc = lab.apply(path)
    if proc.returncode != 0:
        raise BenchError(f"meshlet lab apply -f {path}: {(proc.stderr or proc.stdout).strip()[-300:]}")


def wait_in_force(lab: Lab, node: str, namespace: str, timeout: float = 60.0) -> None:
    """Poll the node's ztunnel /config_dump until `pending` says nothing is missing; BenchError after `timeout`."""
    deadline, why = time.monotonic() + timeout, "not asked yet"
    while time.monotonic() < deadline:
        proc = lab.exec(node, ["curl", "-sS", "-f", "--max-time", "5", ZTUNNEL_CONFIG_DUMP], timeout=30)
        try:
            missing = pending(json.loads(proc.stdout), namespace) if proc.returncode == 0 else proc.stderr.strip()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            missing = f"unreadable /config_dump: {exc!r}"
        if missing is None:
            return
        why = missing
        time.sleep(0.5)  # control pushes within a second of the store's change; a poll is cheap
    raise BenchError(f"the route and policies are not in force on {node} after {timeout:.0f}s: {why}")
