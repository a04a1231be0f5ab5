"""Seeds and mutations shared by the store-YAML and config-stream fuzzers.

`MESH_YAML` is a small valid mesh as a user writes it (every kind control reads); `mutated_json` changes a few
nodes of any JSON-shaped value (replace a value with a hostile one of another type, drop or add a key, grow or
empty a list), so the input stays close enough to the real shape to get past the first check and reach the
converters, rather than being refused at once as random bytes would be.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import strategies as st

MESH_YAML = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {meshlet.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: node1, serviceAccountName: web, containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web, version: v2}}
spec: {nodeName: node2, serviceAccountName: web}
status: {phase: Running, podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: http}, {name: tcp, port: 9000, targetPort: 9000, appProtocol: tcp}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/web"], ipBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {methods: [GET], paths: ["/api/*"], ports: ["8080"]}}]
    when: [{key: "request.headers[x-user]", values: [alice]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {"9000": {mode: PERMISSIVE}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/.*"}, headers: [{name: x-canary, value: "true"}]}]
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: "1"}]}}]
    backendRefs: [{name: web, port: 80, weight: 90}]
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {attempts: 2, codes: [503], backoff: 100ms}
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]
    backendRefs: [{name: web, port: 80}]
---
apiVersion: networking.meshlet.io/v1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRef: {kind: Service, name: web}
  loadBalancer: {simple: LEAST_REQUEST}
  connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5}}
  outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 15s}
  rateLimit: {requestsPerUnit: 10, burst: 10}
"""
MESH_OBJECTS: list[dict[str, Any]] = [d for d in yaml.safe_load_all(MESH_YAML) if d]

HOSTILE_STRINGS = [
    "", " ", "-", "a" * 300, "A", "x\ny", "x\r\ny", "x\0y", "é", "\u0668\u0660", "wеb", "../etc", "*", "**", "{**}",
    "/", "//", "0", "-1", "1e9", "99999", "NaN", "10.0.0.1", "fd00::1", "10.0.0.0/33", "::/0", "300.1.1.1",
    "1s", "1h1h", "-1s", "0s", "1000000000h", "(", "[", "a{99999}", "(a+)+$", "\\", "%00", "TCP", "http",
    "spiffe://x/ns/a/sa/b", "cluster.local/ns/shop/sa/web",
]  # fmt: skip
hostile_scalars = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.sampled_from([None, True, False, 0, -1, 1, 65535, 65536, 2**31, 2**63, -(2**63), 1.5, float("inf")]),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=3),
    st.dictionaries(st.sampled_from(["name", "port", "value", "type", "x"]), hostile_scalars, max_size=2),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path in a JSON-shaped value, leaves first and the root (`()`) last: hypothesis favours the
    first elements of what it samples, and a replaced root tests nothing but the first check."""
    out = []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, i))
    return [*out, prefix]


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return root


@st.composite
def mutated_json(draw: st.DrawFn, seed: Any, max_changes: int = 3) -> Any:
    """`seed` (deep-copied) with 1..`max_changes` nodes replaced, removed, duplicated or grown."""
    value = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, max_changes))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "remove", "grow", "empty"]))
        node = value
        for step in path:
            node = node[step]
        if op == "replace" or not path and op == "remove":
            value = _set(value, path, draw(hostile_values))
        elif op == "remove":
            parent = value
            for step in path[:-1]:
                parent = parent[step]
            del parent[path[-1]]
        elif op == "grow" and isinstance(node, list):
            node.extend(copy.deepcopy(node[-1:]) * draw(st.integers(1, 3)) or [draw(hostile_values)])
        elif op == "grow" and isinstance(node, dict):
            node[draw(st.sampled_from(["x", "name", "port", "extra", "namespace", "kind"]))] = draw(hostile_values)
        elif op == "empty" and isinstance(node, dict | list):
            node.clear()
        else:
            value = _set(value, path, draw(hostile_values))
    return value
