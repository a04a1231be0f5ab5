"""The control service on a cluster: a Deployment, its Service (15012 for nodes, 15014 for operators) and a
PodDisruptionBudget.

Control needs no privilege at all: it runs as a non-root user with every capability dropped and a read-only root
filesystem. It reads the cluster through the API server (`--source kubernetes`, in-cluster credentials of its
ServiceAccount) and publishes the mesh root as the ConfigMap `meshlet-root-cert`, which ztunnels mount.

What survives a control restart: the root CA. Control keeps its self-signed root in the Secret `meshlet-ca` of
its namespace (created by the first control, adopted by every later one: control/ca_secret.py), so a restarted or
rescheduled control signs with the same root and ztunnels keep verifying it. The emptyDir under --state holds a
working copy. A plug-in CA is given with `--set caSecret=NAME`, which mounts that Secret (keys `ca-cert.pem`,
`ca-key.pem`, as Istio's `cacerts`) for control's --ca-cert/--ca-key; control then writes no Secret. Node
registrations need no state on Kubernetes: nodes authenticate with tokens.
"""

from __future__ import annotations

from typing import Any

from daemonset.rbac import CONTROL, labels
from daemonset.values import Values

CONFIG_PORT = 15012
"""Nodes: the config stream and certificate signing (HTTPS)."""
OPS_PORT = 15014
"""Operators: /metrics, /ready, /healthz, /debug/status (HTTP)."""
STATE_DIR = "/var/lib/meshlet/control"
CA_DIR = "/etc/meshlet/ca"


def control_args(values: Values) -> list[str]:
    args = [
        "serve",
        "--source",
        "kubernetes",
        "--state",
        STATE_DIR,
        "--listen",
        f"0.0.0.0:{CONFIG_PORT}",
        "--metrics",
        f"0.0.0.0:{OPS_PORT}",
        "--trust-domain",
        values.trust_domain,
        "--dataplane-label",
        values.dataplane_label,
        "--root-namespace",  # the install's namespace, as Istio's root is the one it is installed in
        values.namespace,
    ]
    if values.istio_compat:
        args.append("--istio-compat")
    if values.ca_secret:
        args += ["--ca-cert", f"{CA_DIR}/ca-cert.pem", "--ca-key", f"{CA_DIR}/ca-key.pem"]
    return args


def _container(values: Values) -> dict[str, Any]:
    return {
        "name": "control",
        "image": values.image,
        "imagePullPolicy": values.image_pull_policy,
        "command": ["python", "-m", "control"],
        "args": control_args(values),
        # The namespace control publishes the root ConfigMap in and checks ztunnel pods against.
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [
            {"name": "https-config", "containerPort": CONFIG_PORT, "protocol": "TCP"},
            {"name": "http-monitoring", "containerPort": OPS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": OPS_PORT}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": OPS_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": values.resources["control"].to_k8s(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1337,
            "runAsGroup": 1337,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}]
        + ([{"name": "ca", "mountPath": CA_DIR, "readOnly": True}] if values.ca_secret else []),
    }


def _volumes(values: Values) -> list[dict[str, Any]]:
    # The CA's working copy (its root is kept in the meshlet-ca Secret) unless a plug-in CA is given: see above.
    volumes: list[dict[str, Any]] = [{"name": "state", "emptyDir": {}}]
    if values.ca_secret:
        volumes.append({"name": "ca", "secret": {"secretName": values.ca_secret, "defaultMode": 0o440}})
    return volumes


def control(values: Values) -> list[dict[str, Any]]:
    meta = {"name": CONTROL, "namespace": values.namespace, "labels": labels(CONTROL)}
    selector = {"matchLabels": labels(CONTROL)}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": values.control_replicas,
            "selector": selector,
            "template": {
                "metadata": {"labels": labels(CONTROL)},
                "spec": {
                    "serviceAccountName": CONTROL,
                    "priorityClassName": "system-cluster-critical",
                    "securityContext": {"fsGroup": 1337, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_container(values)],
                    "volumes": _volumes(values),
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "selector": labels(CONTROL),
            "ports": [
                {"name": "https-config", "port": CONFIG_PORT, "targetPort": CONFIG_PORT, "protocol": "TCP"},
                {"name": "http-monitoring", "port": OPS_PORT, "targetPort": OPS_PORT, "protocol": "TCP"},
            ],
        },
    }
    # maxUnavailable rather than minAvailable: with one replica, minAvailable 1 would block every node drain.
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {"maxUnavailable": 1, "selector": selector},
    }
    return [deployment, service, budget]
