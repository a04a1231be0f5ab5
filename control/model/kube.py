"""Core Kubernetes kinds as the mesh needs them: Namespace, Node, Pod, Service, ServiceAccount.

Each `from_k8s` checks the fields the mesh reads and raises `ValidationError` naming the field; fields
the mesh does not read are left alone (a real API server has validated them already, and the local
store should not be stricter than Kubernetes where it does not matter).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control.model.fields import (
    DNS_SUBDOMAIN,
    ObjectKey,
    fail,
    labels,
    object_key,
    opt_bool,
    opt_list,
    opt_str,
    port_number,
)

Labels = tuple[tuple[str, str], ...]
"""Labels as sorted pairs: hashable, comparable, and deterministic on the wire."""


def _ip(value: object, field: str) -> str:
    if not isinstance(value, str):
        fail(field, f"expected an IP address, got {value!r}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        fail(field, f"{value!r} is not an IP address")


def _labels(obj: Mapping[str, Any]) -> Labels:
    return tuple(sorted(labels(obj, "metadata.labels").items()))


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace; its labels decide enrollment of its pods."""

    name: str
    labels: Labels

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("Namespace", "", self.name)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Namespace:
        return cls(name=object_key(obj, namespaced=False).name, labels=_labels(obj))


@dataclass(frozen=True, slots=True)
class Node:
    """A node; only its addresses matter to the mesh."""

    name: str
    ips: tuple[str, ...]

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("Node", "", self.name)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Node:
        ips = []
        for i, addr in enumerate(opt_list(obj, "status.addresses")):
            if not isinstance(addr, Mapping):
                fail(f"status.addresses[{i}]", "expected a mapping")
            if addr.get("type") == "InternalIP":
                ips.append(_ip(addr.get("address"), f"status.addresses[{i}].address"))
        return cls(name=object_key(obj, namespaced=False).name, ips=tuple(ips))


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod: where it runs, as whom, at which IPs, and whether it serves traffic."""

    uid: str
    name: str
    namespace: str
    node: str
    service_account: str
    ips: tuple[str, ...]
    labels: Labels
    host_network: bool
    phase: str
    ready: bool
    container_ports: tuple[tuple[str, int], ...]
    """Named container ports, for Services whose targetPort is a name."""
    workload_name: str = ""
    """Its controller's name as Istio derives it (`workload_name`); "" reads as the pod's name."""

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("Pod", self.namespace, self.name)

    @property
    def running(self) -> bool:
        return self.phase in ("Running", "Pending") and bool(self.node)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Pod:
        key = object_key(obj, namespaced=True)
        # The local store may omit uids; derive a stable one so a pod keeps its identity across edits.
        uid = opt_str(obj, "metadata.uid") or str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod:{key.namespace}/{key.name}"))
        ips: list[str] = []
        pod_ips = opt_list(obj, "status.podIPs")
        for i, entry in enumerate(pod_ips):
            if not isinstance(entry, Mapping):
                fail(f"status.podIPs[{i}]", "expected a mapping with 'ip'")
            ips.append(_ip(entry.get("ip"), f"status.podIPs[{i}].ip"))
        primary = opt_str(obj, "status.podIP")
        if primary:
            primary = _ip(primary, "status.podIP")
            if primary not in ips:
                ips.insert(0, primary)
        ports: list[tuple[str, int]] = []
        for c, container in enumerate(opt_list(obj, "spec.containers")):
            if not isinstance(container, Mapping):
                fail(f"spec.containers[{c}]", "expected a mapping")
            for p, port in enumerate(opt_list(container, "ports")):
                field = f"spec.containers[{c}].ports[{p}]"
                if not isinstance(port, Mapping):
                    fail(field, "expected a mapping")
                number = port_number(port.get("containerPort"), f"{field}.containerPort")
                if name := opt_str(port, "name"):
                    ports.append((name, number))
        ready = any(
            isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
            for c in opt_list(obj, "status.conditions")
        )
        # Both name identities: the pod's SPIFFE ID, and the node whose credential may obtain it.
        service_account = opt_str(obj, "spec.serviceAccountName") or "default"
        if not DNS_SUBDOMAIN.fullmatch(service_account):
            fail("spec.serviceAccountName", f"{service_account!r} is not a valid name (lowercase RFC 1123 subdomain)")
        node = opt_str(obj, "spec.nodeName")
        if node and not DNS_SUBDOMAIN.fullmatch(node):
            fail("spec.nodeName", f"{node!r} is not a valid node name (lowercase RFC 1123 subdomain)")
        return cls(
            uid=uid,
            name=key.name,
            namespace=key.namespace,
            node=node,
            service_account=service_account,
            ips=tuple(ips),
            labels=_labels(obj),
            host_network=opt_bool(obj, "spec.hostNetwork"),
            phase=opt_str(obj, "status.phase", "Pending"),
            ready=ready,
            container_ports=tuple(ports),
            workload_name=workload_name(obj, key.name),
        )


_CRONJOB_RUN = re.compile(r"(.+)-\d{8,10}")
"""A Job a CronJob created: `<cronjob>-<scheduled time in minutes>`."""


def workload_name(obj: Mapping[str, Any], pod_name: str) -> str:
    """The workload a pod belongs to, by Istio's rules: its controller (the ownerReference with `controller:
    true`) names it, a ReplicaSet with the pod's `pod-template-hash` suffix stands for its Deployment, a Job
    named like a CronJob's run for that CronJob, a ReplicationController of an OpenShift DeploymentConfig for
    that; a pod without a controller is its own workload."""
    labels = obj.get("metadata", {}).get("labels") or {}
    for ref in opt_list(obj, "metadata.ownerReferences"):
        if not isinstance(ref, Mapping) or ref.get("controller") is not True:
            continue
        kind, name = ref.get("kind"), ref.get("name")
        if not isinstance(name, str) or not name:
            continue
        template_hash = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and isinstance(template_hash, str) and template_hash and name.endswith(template_hash):
            return name.removesuffix(template_hash).removesuffix("-") or name
        if kind == "ReplicationController" and isinstance(labels.get("deploymentconfig"), str):
            return str(labels["deploymentconfig"]) or name
        if kind == "Job" and (run := _CRONJOB_RUN.fullmatch(name)):
            return run.group(1)
        return name
    return pod_name


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Service; `target_port` is a number or the name of a container port."""

    name: str
    port: int
    target_port: int | str
    protocol: str
    app_protocol: str = ""
    """`appProtocol`, "" when unset: with the name, whether the port is HTTP (`meshlet_contracts.protocols`)."""


@dataclass(frozen=True, slots=True)
class Service:
    """A Service: its VIPs, ports and the selector that picks its endpoints."""

    name: str
    namespace: str
    vips: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    selector: Labels | None

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("Service", self.namespace, self.name)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Service:
        key = object_key(obj, namespaced=True)
        vips: list[str] = []
        for i, vip in enumerate(opt_list(obj, "spec.clusterIPs")):
            if vip != "None":
                vips.append(_ip(vip, f"spec.clusterIPs[{i}]"))
        cluster_ip = opt_str(obj, "spec.clusterIP")
        if cluster_ip and cluster_ip != "None":
            cluster_ip = _ip(cluster_ip, "spec.clusterIP")
            if cluster_ip not in vips:
                vips.insert(0, cluster_ip)
        ports: list[ServicePort] = []
        for i, port in enumerate(opt_list(obj, "spec.ports")):
            field = f"spec.ports[{i}]"
            if not isinstance(port, Mapping):
                fail(field, "expected a mapping")
            number = port_number(port.get("port"), f"{field}.port")
            raw_target = port.get("targetPort", number)
            target: int | str
            if isinstance(raw_target, str) and not raw_target.isdigit():
                target = raw_target
            else:
                target = port_number(raw_target, f"{field}.targetPort")
            protocol = opt_str(port, "protocol", "TCP")
            if protocol not in ("TCP", "UDP", "SCTP"):
                fail(f"{field}.protocol", f"{protocol!r} is not one of TCP, UDP, SCTP")
            app_protocol = port.get("appProtocol", "")
            if app_protocol is None:
                app_protocol = ""
            elif not isinstance(app_protocol, str):
                fail(f"{field}.appProtocol", f"expected a string, got {app_protocol!r}")
            ports.append(ServicePort(opt_str(port, "name"), number, target, protocol, app_protocol))
        # An empty selector selects nothing, as in Kubernetes (endpoints are then managed by hand).
        selector = labels(obj, "spec.selector") or None
        return cls(
            name=key.name,
            namespace=key.namespace,
            vips=tuple(vips),
            ports=tuple(ports),
            selector=tuple(sorted(selector.items())) if selector is not None else None,
        )


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A service account: the name in a workload's SPIFFE identity."""

    name: str
    namespace: str

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("ServiceAccount", self.namespace, self.name)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> ServiceAccount:
        key = object_key(obj, namespaced=True)
        return cls(name=key.name, namespace=key.namespace)
