"""The control service on a cluster: a Deployment, its Service (15012 for nodes, 15014 for operators) and a
PodDisruptionBudget.

Control needs no privilege at all: it runs as a non-root user with every capability dropped and a read-only root
filesystem. Its arguments are the ones `python -m control serve` takes today; until the Kubernetes source lands
it reads the (empty) file store below, so the Deployment is ready for that source rather than useful without it.
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
STORE_DIR = "/var/lib/meshlet/store"


def control_args(values: Values) -> list[str]:
    return [
        "serve",
        "--store",
        STORE_DIR,
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
    ]


def _container(values: Values) -> dict[str, Any]:
    return {
        "name": "control",
        "image": values.image,
        "imagePullPolicy": values.image_pull_policy,
        "command": ["python", "-m", "control"],
        "args": control_args(values),
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
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}, {"name": "store", "mountPath": STORE_DIR}],
    }


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
                    # The CA and node registrations live here. An emptyDir is lost with the pod (a new root CA);
                    # keeping them in a Secret comes with the Kubernetes source.
                    "volumes": [{"name": "state", "emptyDir": {}}, {"name": "store", "emptyDir": {}}],
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
