"""ServiceAccounts and least-privilege RBAC for control and the node DaemonSet.

Control reads everything the mesh is made of, cluster-wide (list and watch, no get: the watch pipeline lists
and never fetches one object), writes HTTPRoute status, reports rejected objects as Events and checks ztunnels'
ServiceAccount tokens with TokenReview. The node reads pods and namespaces and annotates pods it redirects.
"""

from __future__ import annotations

from typing import Any

from daemonset.values import Values

CONTROL = "meshlet-control"
NODE = "meshlet-node"
READ = ["list", "watch"]


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "meshlet"}


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def control_rules() -> list[dict[str, Any]]:
    return [
        _rule("", ["namespaces", "pods", "services", "serviceaccounts"], READ),
        _rule("discovery.k8s.io", ["endpointslices"], READ),
        # security.istio.io too: control reads Istio's policies for users moving from Istio.
        _rule("security.meshlet.io", ["authorizationpolicies", "peerauthentications"], READ),
        _rule("security.istio.io", ["authorizationpolicies", "peerauthentications"], READ),
        _rule("networking.meshlet.io", ["trafficpolicies"], READ),
        _rule("gateway.networking.k8s.io", ["httproutes"], READ),
        # Route conditions are written back through the status subresource only, never the route itself.
        _rule("gateway.networking.k8s.io", ["httproutes/status"], ["update"]),
        # A rejected object is reported on itself; both Event APIs, as client libraries use either.
        _rule("", ["events"], ["create"]),
        _rule("events.k8s.io", ["events"], ["create"]),
        _rule("authentication.k8s.io", ["tokenreviews"], ["create"]),
    ]


def node_rules() -> list[dict[str, Any]]:
    return [
        # RBAC cannot limit this to the node's own pods: the agent asks only for them (fieldSelector
        # spec.nodeName=$NODE_NAME), but the credential could read every pod. `patch` writes the redirection
        # annotation; nothing else of a pod is changed.
        _rule("", ["pods"], ["get", "list", "watch", "patch"]),
        _rule("", ["namespaces"], ["get", "list", "watch"]),
    ]


def rbac(values: Values) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, rules in ((CONTROL, control_rules()), (NODE, node_rules())):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": values.namespace, "labels": labels(name)},
            }
        )
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name, "labels": labels(name)},
                "rules": rules,
            }
        )
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": labels(name)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": values.namespace}],
            }
        )
    return out
