"""`meshlet lab apply|delete -f FILE`, planned (pure): what to create, keep and remove so the lab holds what
the manifests say, the way `kubectl apply` converges a cluster.

Namespaces, ServiceAccounts, Services and Deployments are understood; any other kind (HTTPRoute,
DestinationRule, ...) is stored as given, for control to read. A Deployment's replicas become lab pods
named `<deployment>-<pod-template-hash>-<id>`, labelled with the template's labels and `pod-template-hash`
and owned by the ReplicaSet `<deployment>-<hash>` (so control names their workload after the Deployment),
placed across the nodes round robin, with the lowest free IP of their node's pod CIDR. A Service without
a clusterIP gets the lowest free one of the lab's service range. Applying the same manifests again
changes nothing; a changed template replaces the pods, changed replicas scale.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from meshlet.lab.apps_objects import (
    DEPLOYMENT_LABEL,
    LAB_NAMESPACES,
    Obj,
    key_of,
    namespace_of,
    normalized,
    pod_object,
    replica_set_object,
)
from meshlet.lab.plan import LabPlan, PodPlan
from meshlet_contracts.mesh_config import ROOT_NAMESPACE, root_namespaces

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The characters Kubernetes uses for generated name suffixes: no vowels (no words), no look-alikes."""


class AppsError(ValueError):
    """Manifests the lab cannot apply; the message names the object and the field."""


@dataclass(frozen=True, slots=True)
class AppPod:
    """A pod of an applied Deployment."""

    pod: PodPlan
    deployment: str
    template_hash: str


@dataclass(slots=True)
class AppsState:
    """What `apply` has made so far: the objects in the store (by key) and the Deployments' pods, in the
    order they were created."""

    objects: dict[str, Obj] = field(default_factory=dict)
    pods: list[AppPod] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"objects": self.objects, "pods": [asdict(p) for p in self.pods]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppsState:
        pods = [AppPod(PodPlan(**p["pod"]), p["deployment"], p["template_hash"]) for p in data.get("pods", ())]
        return cls(dict(data.get("objects", {})), pods)


@dataclass(slots=True)
class Change:
    """What one apply or delete does, in order: remove `remove` from the store and `stop` pods, start
    `start` pods, then write `write`; `state` is what the lab holds afterwards."""

    state: AppsState
    write: list[Obj] = field(default_factory=list)
    remove: list[Obj] = field(default_factory=list)
    start: list[AppPod] = field(default_factory=list)
    stop: list[AppPod] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    """One line per manifest, as kubectl prints them: `deployment.apps/web configured`."""


def load_manifests(text: str, source: str) -> list[Obj]:
    """The objects of a YAML stream (`---` separated; `kind: List` flattened); AppsError naming the document."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise AppsError(f"{source}: not YAML: {exc}") from exc
    out: list[Obj] = []
    for index, doc in enumerate(docs, 1):
        if doc is None:
            continue
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items or ():
            where = f"{source}, document {index}"
            if not isinstance(item, dict):
                raise AppsError(f"{where}: expected a mapping with apiVersion, kind and metadata")
            meta = item.get("metadata")
            if not isinstance(item.get("kind"), str) or not isinstance(item.get("apiVersion"), str):
                raise AppsError(f"{where}: apiVersion and kind are required")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
                raise AppsError(f"{where}: {item['kind']} without metadata.name")
            out.append(item)
    return out


def template_hash(template: Mapping[str, Any]) -> str:
    """The pod-template-hash of a pod template: stable over key order, 10 characters of SAFE_ALPHABET."""
    digest = int.from_bytes(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big")
    return _encode(digest, 10)


def _encode(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, rest = divmod(number, len(SAFE_ALPHABET))
        chars.append(SAFE_ALPHABET[rest])
    return "".join(chars)


def pod_name(deployment: str, hash_: str, taken: set[str]) -> str:
    """`<deployment>-<hash>-<id>`: the first id (5 characters, derived from a counter) not in `taken`."""
    for n in range(10_000):
        digest = int.from_bytes(hashlib.sha256(f"{deployment}/{hash_}/{n}".encode()).digest()[:8], "big")
        name = f"{deployment}-{hash_}-{_encode(digest, 5)}"
        if name not in taken:
            return name
    raise AppsError(f"no free pod name for deployment {deployment}")  # unreachable with MAX_REPLICAS


def pick_node(lab: LabPlan, siblings: Iterable[AppPod], others: Iterable[AppPod] = ()) -> str:
    """The node with the fewest pods of this Deployment (round robin over its replicas); on a tie the one with
    the fewest pods of other Deployments (so `v1` and `v2` of one replica each land on different nodes), then
    the first."""
    mine = {node.name: 0 for node in lab.nodes}
    all_ = dict(mine)
    for pod in siblings:
        mine[pod.pod.node] += 1
    for pod in others:
        all_[pod.pod.node] += 1
    return min(lab.nodes, key=lambda n: (mine[n.name], all_[n.name])).name


def pod_ip(lab: LabPlan, node: str, used: set[str]) -> str:
    """The lowest address of the node's pod CIDR that no pod uses, after the gateway."""
    plan = lab.node(node)
    for host in ipaddress.ip_network(plan.pod_cidr).hosts():
        ip = str(host)
        if ip != plan.gateway and ip not in used:
            return ip
    raise AppsError(f"node {node} has no free pod address left in {plan.pod_cidr}")


def deployment_pods(pods: Iterable[AppPod], namespace: str, deployment: str) -> list[AppPod]:
    return [p for p in pods if p.pod.namespace == namespace and p.deployment == deployment]


def service_ip(lab: LabPlan, state: AppsState, obj: Obj) -> None:
    """Fill in the Service's clusterIP: the one it already has, the one it asks for (if free and in the lab's
    service range), or the lowest free one; `None` (headless) stays. The field is immutable, as in Kubernetes."""
    key, spec = key_of(obj), obj["spec"]
    held = state.objects.get(key, {}).get("spec", {}).get("clusterIP")
    asked = spec.get("clusterIP") or held
    if held and asked != held:
        raise AppsError(f"{key}: spec.clusterIP is immutable ({held}; delete the Service to change it)")
    if asked == "None":
        spec["clusterIPs"] = ["None"]
        return
    used = {s.vip for s in lab.services} | {
        o["spec"].get("clusterIP") for k, o in state.objects.items() if o["kind"] == "Service" and k != key
    }
    net = ipaddress.ip_network(lab.service_cidr)
    if asked:
        try:
            inside = ipaddress.ip_address(asked) in net
        except ValueError:
            inside = False
        if not inside or asked in used:
            raise AppsError(f"{key}: spec.clusterIP {asked} is not a free address of the lab's range {net}")
        ip = str(asked)
    else:
        free = (str(h) for h in list(net.hosts())[9:] if str(h) not in used)  # from .10, as `up` allocates
        ip = next(free, "")
        if not ip:
            raise AppsError(f"{key}: no free ClusterIP left in {net}")
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]


def new_pod(lab: LabPlan, state: AppsState, namespace: str, deployment: str, hash_: str) -> AppPod:
    """Place and name one more pod of `namespace/deployment`."""
    taken = {p.pod.name for p in state.pods if p.pod.namespace == namespace} | {
        p.name for p in lab.pods if p.namespace == namespace
    }
    name = pod_name(deployment, hash_, taken)
    node = pick_node(lab, deployment_pods(state.pods, namespace, deployment), state.pods)
    used = {p.ip for p in lab.pods} | {p.pod.ip for p in state.pods}
    ip = pod_ip(lab, node, used)
    plan = PodPlan(
        name=name,
        namespace=namespace,
        node=node,
        ip=ip,
        netns=f"{lab.prefix}{namespace}-{name}",
        node_link=f"vp{ip.rsplit('.', 1)[1]}",  # unique in the node's netns, as the IP is in its CIDR
        cgroup=f"{lab.cgroup}/{node}/pods/{namespace}.{name}",
    )
    return AppPod(plan, deployment, hash_)


def plan_apply(lab: LabPlan, current: AppsState, manifests: Iterable[Obj]) -> Change:
    """Converge `current` towards the manifests (objects not named in them are left alone, as kubectl does)."""
    state = AppsState(dict(current.objects), list(current.pods))
    change = Change(state)
    roots = root_namespaces(ROOT_NAMESPACE, lab.istio_compat)  # in the store from `up`, as an install makes them
    namespaces = (
        set(LAB_NAMESPACES)
        | set(roots)
        | {o["metadata"]["name"] for o in state.objects.values() if o["kind"] == "Namespace"}
    )
    ordered = sorted(manifests, key=lambda o: {"Namespace": 0, "ServiceAccount": 1, "Service": 2}.get(o["kind"], 3))
    for raw in ordered:
        try:
            obj = normalized(lab, raw)
        except ValueError as exc:
            raise AppsError(str(exc)) from exc
        key = key_of(obj)
        if obj["kind"] in ("Pod", "ReplicaSet"):
            raise AppsError(f"{key}: the lab runs pods through Deployments only (apply a Deployment)")
        if obj["kind"] == "Service":
            service_ip(lab, state, obj)
        ns = namespace_of(obj)
        if obj["kind"] == "Namespace":
            namespaces.add(obj["metadata"]["name"])
        elif ns and ns not in namespaces:
            raise AppsError(f"{key}: namespace {ns!r} does not exist (apply a Namespace {ns} first)")
        old = state.objects.get(key)
        if obj["kind"] == "Deployment":
            _converge_deployment(lab, state, change, obj)
        if old == obj:
            change.results.append(f"{key} unchanged")
            continue
        state.objects[key] = obj
        change.write.append(obj)
        change.results.append(f"{key} {'created' if old is None else 'configured'}")
    return change


def _converge_deployment(lab: LabPlan, state: AppsState, change: Change, obj: Obj) -> None:
    ns, name = namespace_of(obj), obj["metadata"]["name"]
    spec = obj["spec"]
    hash_ = template_hash(spec["template"])
    pods = deployment_pods(state.pods, ns, name)
    keep = [p for p in pods if p.template_hash == hash_][: spec["replicas"]]
    for pod in pods:
        if pod not in keep:  # another template, or more than the replicas asked for (the newest go)
            _stop(state, change, pod)
    while len(keep) < spec["replicas"]:
        pod = new_pod(lab, state, ns, name, hash_)
        state.pods.append(pod)
        keep.append(pod)
        change.start.append(pod)
        for made in (replica_set_object(lab, obj, hash_), pod_object(lab, obj, pod.pod, hash_)):
            if key_of(made) not in state.objects:
                state.objects[key_of(made)] = made
                change.write.append(made)
    live_sets = {f"{name}-{p.template_hash}" for p in keep}
    for key, other in list(state.objects.items()):
        owner = other["metadata"].get("labels", {}).get(DEPLOYMENT_LABEL)
        if other["kind"] == "ReplicaSet" and owner == name and namespace_of(other) == ns:
            if other["metadata"]["name"] not in live_sets:
                change.remove.append(state.objects.pop(key))


def _stop(state: AppsState, change: Change, pod: AppPod) -> None:
    state.pods.remove(pod)
    change.stop.append(pod)
    key = f"Pod/{pod.pod.namespace}/{pod.pod.name}"
    if key in state.objects:
        change.remove.append(state.objects.pop(key))


def plan_delete(lab: LabPlan, current: AppsState, manifests: Iterable[Obj]) -> Change:
    """Remove what the manifests name (a Namespace takes everything applied in it, a Deployment its pods and
    ReplicaSets); names the lab does not hold are reported `not found`, as kubectl does."""
    state = AppsState(dict(current.objects), list(current.pods))
    change = Change(state)
    # Namespaces last: what a file names inside a namespace it also deletes is then found and reported deleted.
    for raw in sorted(manifests, key=lambda o: o["kind"] == "Namespace"):
        key = key_of(raw)
        obj = state.objects.get(key)
        if obj is None:
            change.results.append(f"{key} not found")
            continue
        doomed = [obj]
        if obj["kind"] == "Namespace":
            doomed += [o for o in state.objects.values() if namespace_of(o) == obj["metadata"]["name"]]
        for gone in doomed:
            gone_ns = namespace_of(gone)
            if gone["kind"] == "Deployment":
                name = gone["metadata"]["name"]
                for pod in deployment_pods(state.pods, gone_ns, name):
                    _stop(state, change, pod)
                doomed += [
                    o
                    for o in state.objects.values()
                    if o["kind"] == "ReplicaSet"
                    and namespace_of(o) == gone_ns
                    and o["metadata"].get("labels", {}).get(DEPLOYMENT_LABEL) == name
                ]
            if state.objects.pop(key_of(gone), None) is not None:
                change.remove.append(gone)
        change.results.append(f"{key} deleted")
    return change
