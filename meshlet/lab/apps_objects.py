"""The objects `meshlet lab apply` writes, in the shapes of the real API (pure): manifests checked and
completed the way the API server would (default namespace, replicas, ...), and the ReplicaSets and Pods a
Deployment's controllers would make.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from control.model.fields import CLUSTER_SCOPED
from meshlet.lab.objects import LAB_LABEL
from meshlet.lab.plan import APP_PORT, MESH_NAMESPACE, PLAIN_NAMESPACE, LabPlan, PodPlan

Obj = dict[str, Any]
LAB_NAMESPACES = ("default", MESH_NAMESPACE, PLAIN_NAMESPACE)
"""Namespaces that exist without being applied: Kubernetes' `default` and the lab's own two."""
DEPLOYMENT_LABEL = "meshlet.io/deployment"
"""On the ReplicaSets the lab makes: which Deployment they belong to."""
MAX_REPLICAS = 50


def namespace_of(obj: Obj) -> str:
    """The object's namespace ("" for cluster-scoped kinds), `default` when a namespaced one names none."""
    if obj["kind"] in CLUSTER_SCOPED:
        return ""
    return str(obj["metadata"].get("namespace") or "default")


def key_of(obj: Obj) -> str:
    """`Kind/namespace/name`, or `Kind/name` for cluster-scoped kinds: how results and the state name objects."""
    ns = namespace_of(obj)
    return f"{obj['kind']}/{ns}/{obj['metadata']['name']}" if ns else f"{obj['kind']}/{obj['metadata']['name']}"


def _uid(lab: LabPlan, key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"meshlet-lab:{lab.lab_id}:{key}"))


def normalized(lab: LabPlan, raw: Obj) -> Obj:
    """A copy of `raw` completed and checked as the API server would (AppsError-worthy problems raise
    ValueError naming the object and field); a Service's clusterIP is left to the caller to allocate."""
    obj = copy.deepcopy(raw)
    meta = obj["metadata"]
    key = key_of(obj)
    if obj["kind"] not in CLUSTER_SCOPED:
        meta["namespace"] = namespace_of(obj)
    for field in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        meta.pop(field, None)  # what a server sets, whatever the manifest says
    obj.pop("status", None)
    kind = obj["kind"]
    if kind in ("Namespace", "Service", "ServiceAccount", "Deployment"):
        labels = meta.get("labels") or {}
        if not isinstance(labels, dict):
            raise ValueError(f"{key}: metadata.labels must be a mapping")
        meta["labels"] = {**labels, LAB_LABEL: lab.lab_id}
        meta["uid"] = _uid(lab, key)
    if kind == "Namespace":
        meta["labels"]["kubernetes.io/metadata.name"] = meta["name"]
    elif kind == "Service":
        _service(obj, key)
    elif kind == "Deployment":
        _deployment(obj, key)
    return obj


def _service(obj: Obj, key: str) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        raise ValueError(f"{key}: spec must be a mapping")
    spec.setdefault("type", "ClusterIP")
    ports = spec.get("ports") or []
    if not isinstance(ports, list) or not all(isinstance(p, dict) and isinstance(p.get("port"), int) for p in ports):
        raise ValueError(f"{key}: spec.ports must be a list of mappings with a numeric port")
    for port in ports:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])
    if spec.get("selector") is not None and not isinstance(spec["selector"], dict):
        raise ValueError(f"{key}: spec.selector must be a mapping of labels")


def _deployment(obj: Obj, key: str) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{key}: spec is required")
    replicas = spec.setdefault("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"{key}: spec.replicas {replicas!r} must be a number in 0..{MAX_REPLICAS} (a lab's limit)")
    template = spec.get("template")
    labels = template.get("metadata", {}).get("labels") if isinstance(template, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{key}: spec.template.metadata.labels is required")
    match = (spec.get("selector") or {}).get("matchLabels")
    if not isinstance(match, dict) or not match:
        raise ValueError(f"{key}: spec.selector.matchLabels is required")
    if any(labels.get(k) != v for k, v in match.items()):
        raise ValueError(f"{key}: spec.selector.matchLabels {match} does not match the template's labels {labels}")


APP_ENV_PREFIX = "ECHO_"
"""The environment variables of a Deployment's container that reach the lab's sample app (its steering)."""


def app_env(deployment: Obj) -> dict[str, str]:
    """The ECHO_* variables of the template's first container (`env: [{name, value}]`), values as strings; the
    rest of the environment is the image's business, which the lab does not run."""
    containers = (deployment["spec"]["template"].get("spec") or {}).get("containers") or [{}]
    first = containers[0] if isinstance(containers[0], dict) else {}
    out: dict[str, str] = {}
    for var in first.get("env") or ():
        if isinstance(var, dict) and str(var.get("name", "")).startswith(APP_ENV_PREFIX):
            value = var.get("value", "")
            out[str(var["name"])] = "" if value is None else str(value)
    return out


def replica_set_object(lab: LabPlan, deployment: Obj, hash_: str) -> Obj:
    """The ReplicaSet `<deployment>-<hash>` the Deployment controller would make for one template."""
    name, ns = deployment["metadata"]["name"], namespace_of(deployment)
    template = deployment["spec"]["template"]
    labels = {**template["metadata"]["labels"], "pod-template-hash": hash_}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-{hash_}",
            "namespace": ns,
            "uid": _uid(lab, f"ReplicaSet/{ns}/{name}-{hash_}"),
            "labels": {**labels, LAB_LABEL: lab.lab_id, DEPLOYMENT_LABEL: name},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": name,
                    "uid": deployment["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": deployment["spec"]["replicas"],
            "selector": {"matchLabels": {**deployment["spec"]["selector"]["matchLabels"], "pod-template-hash": hash_}},
        },
    }


def pod_object(lab: LabPlan, deployment: Obj, pod: PodPlan, hash_: str) -> Obj:
    """The running, ready Pod the ReplicaSet and kubelet would make; it runs the sample app whatever image
    the template names, on the template's container ports (so named targetPorts resolve)."""
    template = deployment["spec"]["template"]
    tspec = template.get("spec") or {}
    name, ns = deployment["metadata"]["name"], namespace_of(deployment)
    containers = tspec.get("containers") or [
        {
            "name": "app",
            "image": "meshlet.io/lab-sample-app:latest",
            "ports": [{"name": "http", "containerPort": APP_PORT}],
        }
    ]
    node = lab.node(pod.node)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": ns,
            # A new pod is a new object, as the API server makes it: a name and IP can come back, the uid never.
            "uid": str(uuid.uuid4()),
            "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": {**template["metadata"]["labels"], "pod-template-hash": hash_, LAB_LABEL: lab.lab_id},
            "annotations": dict(template["metadata"].get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{name}-{hash_}",
                    "uid": _uid(lab, f"ReplicaSet/{ns}/{name}-{hash_}"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "nodeName": pod.node,
            "serviceAccountName": tspec.get("serviceAccountName") or "default",
            "containers": copy.deepcopy(containers),
        },
        "status": {
            "phase": "Running",
            "hostIP": node.ip,
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
