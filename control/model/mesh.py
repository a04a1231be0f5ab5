"""From converted objects to what the node proxies need: workloads, services with endpoints, policies.

A pure function of the current objects: the store calls it after every change and compares the result
with the previous one, so a change that does not alter what proxies see (a ServiceAccount added, say)
makes no new version. Items are JSON-able dicts built through their definitions in `meshlet_contracts.config_items`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from control.model.kube import Namespace, Pod, Service, ServicePort
from control.model.routes import HTTPRoute, with_status
from control.model.security import AuthorizationPolicy, PeerAuthentication
from control.model.traffic import TrafficPolicy
from meshlet_contracts.config_items import ConfigItem, EndpointItem, ServiceItem, ServicePortItem, WorkloadItem
from meshlet_contracts.mesh_config import DATAPLANE_LABEL, ROOT_NAMESPACE, dataplane_labels, root_namespaces
from meshlet_contracts.policy import selects
from meshlet_contracts.wire import COLLECTIONS, item_key, spiffe_id

WireItem = ConfigItem
MeshState = dict[str, dict[str, WireItem]]
"""collection -> item key -> item, for every collection in `meshlet_contracts.wire.COLLECTIONS`."""


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """Cluster-wide facts the model needs."""

    trust_domain: str = "cluster.local"
    """The SPIFFE trust domain of every identity."""
    dataplane_label: str = DATAPLANE_LABEL
    """Namespace label (value `ambient`) that enrolls pods, and pod label (value `none`) that opts out."""
    cluster_domain: str = "cluster.local"
    root_namespace: str = ROOT_NAMESPACE
    """Policies in this namespace apply to every workload of the mesh (sent to every ztunnel)."""
    istio_compat: bool = False
    """Honor Istio's names too: `istio-system` is a second root namespace, `istio.io/dataplane-mode` enrolls."""

    @property
    def dataplane_labels(self) -> tuple[str, ...]:
        return dataplane_labels(self.dataplane_label, self.istio_compat)

    @property
    def root_namespaces(self) -> tuple[str, ...]:
        return root_namespaces(self.root_namespace, self.istio_compat)


def enrolled(pod: Pod, namespace: Namespace | None, settings: MeshSettings) -> bool:
    """Namespace label `ambient` enrolls; pod label `none` opts out (with Istio compatibility, either label of
    either project does); host-network pods never."""
    if pod.host_network or namespace is None:
        return False
    keys = settings.dataplane_labels
    pod_labels, ns_labels = dict(pod.labels), dict(namespace.labels)
    return any(ns_labels.get(k) == "ambient" for k in keys) and all(pod_labels.get(k) != "none" for k in keys)


def workload_item(pod: Pod, namespace: Namespace | None, settings: MeshSettings) -> WorkloadItem:
    return {
        "uid": pod.uid,
        "name": pod.name,
        "namespace": pod.namespace,
        "node": pod.node,
        "serviceAccount": pod.service_account,
        "identity": spiffe_id(settings.trust_domain, pod.namespace, pod.service_account),
        "ips": list(pod.ips),
        "labels": dict(pod.labels),
        "enrolled": enrolled(pod, namespace, settings),
        "ready": pod.ready,
        "workloadName": pod.workload_name or pod.name,
    }


def service_item(service: Service, pods: Iterable[Pod], settings: MeshSettings) -> ServiceItem:
    endpoints: list[EndpointItem] = []
    if service.selector is not None:
        for pod in pods:
            if pod.namespace != service.namespace or not pod.ips or not pod.running:
                continue
            if not selects(service.selector, dict(pod.labels)):
                continue
            named = dict(pod.container_ports)
            port_map: dict[str, int] = {}
            for sp in service.ports:
                target = sp.target_port if isinstance(sp.target_port, int) else named.get(sp.target_port)
                if target is not None:  # a named port the pod lacks: not an endpoint for that port
                    port_map[str(sp.port)] = target
            endpoints.append({"workloadUid": pod.uid, "ip": pod.ips[0], "ports": port_map, "ready": pod.ready})
    endpoints.sort(key=lambda e: (e["ip"], e["workloadUid"]))
    return {
        "name": service.name,
        "namespace": service.namespace,
        "hostname": f"{service.name}.{service.namespace}.svc.{settings.cluster_domain}",
        "vips": list(service.vips),
        "ports": [_port_item(p) for p in service.ports],
        "endpoints": endpoints,
    }


def _port_item(port: ServicePort) -> ServicePortItem:
    item: ServicePortItem = {
        "name": port.name,
        "port": port.port,
        "targetPort": port.target_port,
        "protocol": port.protocol,
    }
    if port.app_protocol:  # absent when unset, so items of Services without it stay as they were
        item["appProtocol"] = port.app_protocol
    return item


@dataclass(slots=True)
class BuildCache:
    """What the last `build_state` derived, reused for inputs that are the very same objects (the store's
    objects are frozen and replaced on change): one pod changing among 10,000 rebuilds one workload item and
    the Services of its namespace, and every other item is the object the previous state held, so comparing
    the states (and diffing them per proxy) stops at identity for all of them."""

    workloads: dict[str, tuple[Pod, Namespace | None, WorkloadItem]] = field(default_factory=dict)
    services: dict[str, tuple[Service, tuple[Pod, ...], ServiceItem]] = field(default_factory=dict)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """The very same objects, in order (what the cache keeps is referenced, so identity cannot be recycled)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def build_state(objects: Iterable[object], settings: MeshSettings, cache: BuildCache | None = None) -> MeshState:
    """The mesh as the proxies see it, from every currently valid object (`cache`: see `BuildCache`)."""
    namespaces: dict[str, Namespace] = {}
    pods: list[Pod] = []
    services: list[Service] = []
    http_routes: list[HTTPRoute] = []
    policies: list[tuple[str, AuthorizationPolicy | PeerAuthentication | TrafficPolicy]] = []
    for obj in objects:
        if isinstance(obj, Namespace):
            namespaces[obj.name] = obj
        elif isinstance(obj, Pod):
            pods.append(obj)
        elif isinstance(obj, Service):
            services.append(obj)
        elif isinstance(obj, AuthorizationPolicy):
            policies.append(("authorization_policies", obj))
        elif isinstance(obj, PeerAuthentication):
            policies.append(("peer_authentications", obj))
        elif isinstance(obj, HTTPRoute):
            http_routes.append(obj)
        elif isinstance(obj, TrafficPolicy):
            # Every valid policy is sent; the proxy keeps the oldest per target, as control reports.
            policies.append(("traffic_policies", obj))
    state: MeshState = {c: {} for c in COLLECTIONS}
    live = [p for p in pods if p.phase not in ("Succeeded", "Failed")]
    old = cache if cache is not None else BuildCache()
    new = BuildCache()
    by_namespace: dict[str, list[Pod]] = {}
    for pod in live:
        by_namespace.setdefault(pod.namespace, []).append(pod)
        ns = namespaces.get(pod.namespace)
        held = old.workloads.get(pod.uid)
        if held is not None and held[0] is pod and held[1] is ns:
            item = held[2]
        else:
            item = workload_item(pod, ns, settings)
        new.workloads[pod.uid] = (pod, ns, item)
        state["workloads"][item_key("workloads", item)] = item
    for svc in services:
        # Only the Service's namespace can hold its endpoints: O(pods) for all Services, not O(Services x pods).
        candidates = tuple(by_namespace.get(svc.namespace, ()))
        key = f"{svc.namespace}/{svc.name}"
        held_svc = old.services.get(key)
        if held_svc is not None and held_svc[0] is svc and _same(held_svc[1], candidates):
            service = held_svc[2]
        else:
            service = service_item(svc, candidates, settings)
        new.services[key] = (svc, candidates, service)
        state["services"][item_key("services", service)] = service
    if cache is not None:
        cache.workloads, cache.services = new.workloads, new.services
    for collection, policy in policies:
        wire = policy.to_wire()
        state[collection][item_key(collection, wire)] = wire
    by_key = {f"{s.namespace}/{s.name}": s for s in services}
    for route in http_routes:
        # Status depends on the Services: worked out here, so a Service appearing re-resolves its routes.
        route_item = with_status(route, by_key).to_wire()
        state["http_routes"][item_key("http_routes", route_item)] = route_item
    return state


def diff(old: Mapping[str, Mapping[str, WireItem]], new: MeshState) -> tuple[MeshState, dict[str, list[str]]]:
    """(items added or changed, keys removed) per collection, from `old` to `new`."""
    upsert: MeshState = {}
    remove: dict[str, list[str]] = {}
    for c in COLLECTIONS:
        before, after = old.get(c, {}), new.get(c, {})
        changed = {k: v for k, v in after.items() if (held := before.get(k)) is not v and held != v}
        gone = sorted(k for k in before if k not in after)
        if changed:
            upsert[c] = changed
        if gone:
            remove[c] = gone
    return upsert, remove
