"""Kubernetes-shaped objects for a planned lab: what kubelet and the API server would hold (pure).

The lab writes Namespace, Node, Pod, Service and ServiceAccount objects in the shapes of the real API
(`v1`), so control reads the lab exactly as it would read a cluster. Only fields that a cluster would
set and that the mesh reads are filled in.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from meshlet.lab.plan import APP_PORT, MESH_NAMESPACE, SERVICE_PORT, LabPlan, NodePlan, PodPlan, ServicePlan
from meshlet_contracts.mesh_config import DATAPLANE_LABEL, ROOT_NAMESPACE, root_namespaces

Obj = dict[str, Any]
LAB_LABEL = "meshlet.io/lab"


def _meta(plan: LabPlan, name: str, namespace: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {
        "name": name,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"meshlet-lab:{plan.lab_id}:{namespace}:{name}")),
        "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def namespace_object(plan: LabPlan, name: str) -> Obj:
    labels = {"kubernetes.io/metadata.name": name, LAB_LABEL: plan.lab_id}
    if name == MESH_NAMESPACE:
        labels[DATAPLANE_LABEL] = "ambient"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(plan, name, labels=labels)}


def node_object(plan: LabPlan, node: NodePlan) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta(plan, node.name, labels={"kubernetes.io/hostname": node.name, LAB_LABEL: plan.lab_id}),
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ip},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod_object(plan: LabPlan, pod: PodPlan) -> Obj:
    node = plan.node(pod.node)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(plan, pod.name, pod.namespace, labels={"app": "web", LAB_LABEL: plan.lab_id}),
        "spec": {
            "nodeName": pod.node,
            "serviceAccountName": "web",
            "containers": [
                {
                    "name": "app",
                    "image": "meshlet.io/lab-sample-app:latest",
                    "ports": [{"name": "http", "containerPort": APP_PORT, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": APP_PORT}},
                }
            ],
        },
        "status": {
            "phase": "Running",
            "hostIP": node.ip,
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def service_object(plan: LabPlan, service: ServicePlan) -> Obj:
    port: Obj = {"name": service.port_name, "port": SERVICE_PORT, "targetPort": APP_PORT, "protocol": "TCP"}
    if service.app_protocol:
        port["appProtocol"] = service.app_protocol
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan, service.name, service.namespace, labels={LAB_LABEL: plan.lab_id}),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": service.vip,
            "clusterIPs": [service.vip],
            "selector": {"app": "web"},
            "ports": [port],
        },
    }


def service_account_object(plan: LabPlan, name: str, namespace: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(plan, name, namespace)}


def lab_objects(plan: LabPlan) -> list[Obj]:
    """All objects of the lab, namespaces first (the order an API server would need them in). The root
    namespaces exist, empty, as an install makes them: mesh-wide policies go there (`meshlet apply` wants them)."""
    namespaces = sorted({p.namespace for p in plan.pods})
    roots = root_namespaces(ROOT_NAMESPACE, plan.istio_compat)
    objs: list[Obj] = [namespace_object(plan, ns) for ns in (*roots, *namespaces)]
    objs += [node_object(plan, n) for n in plan.nodes]
    for ns in namespaces:
        objs += [service_account_object(plan, "default", ns), service_account_object(plan, "web", ns)]
    objs += [service_object(plan, s) for s in plan.services]
    objs += [pod_object(plan, p) for p in plan.pods]
    return objs
