"""ServiceAccounts and least-privilege RBAC for control and the node DaemonSet.

Control reads everything the mesh is made of, cluster-wide (list and watch: the watch pipeline lists and
watches), gets one pod (the pod a ztunnel's token is bound to), writes HTTPRoute status, reports rejected objects
as Events, checks ztunnels' ServiceAccount tokens with TokenReview and, in its own namespace only (a Role),
publishes the mesh root in the ConfigMap `meshlet-root-cert`. The node reads pods and namespaces and annotates
pods it redirects.
"""

from __future__ import annotations

from typing import Any

from daemonset.values import Values

CONTROL = "meshlet-control"
CA_SECRET = "meshlet-ca"
"""Control's self-signed root CA (control/ca_secret.py)."""
NODE = "meshlet-node"
ROOT_CERT_CONFIGMAP = "meshlet-root-cert"
"""Control publishes the mesh root here (key `root-cert.pem`); the node DaemonSet mounts it for ztunnel."""
READ = ["list", "watch"]


def labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "meshlet"}


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def control_rules() -> list[dict[str, Any]]:
    return [
        _rule("", ["namespaces", "pods", "services", "serviceaccounts", "nodes"], READ),
        # A ztunnel's token names its pod: control checks that pod is a running ztunnel before trusting it.
        _rule("", ["pods"], ["get"]),
        _rule("discovery.k8s.io", ["endpointslices"], READ),
        # security.istio.io too: control reads Istio's policies for users moving from Istio.
        _rule("security.meshlet.io", ["authorizationpolicies", "peerauthentications"], READ),
        _rule("security.istio.io", ["authorizationpolicies", "peerauthentications"], READ),
        _rule("networking.meshlet.io", ["trafficpolicies"], READ),
        _rule("gateway.networking.k8s.io", ["httproutes"], READ),
        # Route conditions are written back through the status subresource only, never the route itself.
        _rule("gateway.networking.k8s.io", ["httproutes/status"], ["update", "patch"]),
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


def root_cert_rules() -> list[dict[str, Any]]:
    """Control's rights in its own namespace: `create` cannot be limited to a name (the object does not exist
    yet), so the Role is namespaced; reading and rewriting are limited to the one ConfigMap, and reading to the one
    Secret (the root CA, never rewritten: see control/ca_secret.py)."""
    named = {**_rule("", ["configmaps"], ["get", "update", "patch"]), "resourceNames": [ROOT_CERT_CONFIGMAP]}
    ca = {**_rule("", ["secrets"], ["get"]), "resourceNames": [CA_SECRET]}
    return [named, _rule("", ["configmaps"], ["create"]), ca, _rule("", ["secrets"], ["create"])]


def _root_cert_role(values: Values) -> list[dict[str, Any]]:
    meta = {"name": CONTROL, "namespace": values.namespace, "labels": labels(CONTROL)}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": root_cert_rules()}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROL},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROL, "namespace": values.namespace}],
    }
    return [role, binding]


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
    return out + _root_cert_role(values)
