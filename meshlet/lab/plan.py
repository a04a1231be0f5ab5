"""What a lab is made of: names, addresses and interfaces, derived from the lab id and a slot (pure).

Every name that lives in the host's scope (network namespaces, links in the host netns, cgroups) starts
with `ml-<id>-`, so two labs never collide and `down` can find leftovers of a crashed `up` by prefix.
Names inside a node's or a pod's own netns (`eth0`, `br0`) need no prefix: each netns is its own scope.

Addresses come from the slot, a small integer allocated per running lab, so parallel labs also use
disjoint subnets:
- underlay (the "node network", a bridge in the host netns): 10.250.<slot>.0/24; host .1, node i .(10+i)
- pod CIDR of node i: 10.244.<slot*8 + i-1>.0/24; the node's bridge is .1, pods from .2
- service VIPs: 10.96.<slot>.0/24 from .10
Nodes get no default route, and the host does not forward, so nothing a lab sends can leave the machine.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_SLOTS = 32
MAX_NODES = 8
MAX_PODS_PER_NODE = 26
ID_PATTERN = re.compile(r"[a-z][a-z0-9]{0,7}")  # fullmatch: `$` would take a trailing newline
PORT_NAME_PATTERN = re.compile(r"(?=.{1,15}\Z)[a-z0-9]([a-z0-9-]*[a-z0-9])?")
APP_PROTOCOL_PATTERN = re.compile(r"([a-z0-9.-]+/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MESH_NAMESPACE = "mesh"
PLAIN_NAMESPACE = "plain"
APP_PORT = 8080
CONTROL_PORT = 15012
CONTROL_METRICS_PORT = 15014
TRUST_DOMAIN = "cluster.local"
SERVICE_PORT = 80
REDIRECT_MODES = ("iptables", "ebpf", "auto")
SOURCES = ("file", "kubernetes")


class PlanError(ValueError):
    """A lab cannot be planned as asked (bad id, too many nodes, ...)."""


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One node: a network namespace joined to the underlay, routing its pod CIDR."""

    name: str
    index: int
    """1-based; used in link names and addresses."""
    netns: str
    host_link: str
    """The host end of the node's underlay veth (attached to the lab bridge)."""
    ip: str
    """The node's address on the underlay."""
    pod_cidr: str
    gateway: str
    """The node's address on its pod bridge: the pods' default gateway and the probe source."""
    cgroup: str
    """cgroup (relative to the cgroup v2 root) of the node's own processes."""


@dataclass(frozen=True, slots=True)
class PodPlan:
    """One pod: a network namespace with a veth to its node, an IP and its own cgroup."""

    name: str
    namespace: str
    node: str
    ip: str
    netns: str
    node_link: str
    """The node end of the pod's veth, inside the node's netns."""
    cgroup: str


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """A ClusterIP service selecting the `app: web` pods of one namespace."""

    name: str
    namespace: str
    vip: str
    port_name: str = "http"
    """The name of its one port: by Istio's convention `http`/`http-*` makes it HTTP, `tcp`/`tcp-*` not."""
    app_protocol: str = ""
    """The port's `appProtocol` ("" leaves it out); when set it decides over the name (`http`, `tcp`, ...)."""


@dataclass(frozen=True, slots=True)
class LabPlan:
    """Everything `up` makes and `down` removes, computed before anything is touched."""

    lab_id: str
    slot: int
    redirect: str
    bridge: str
    host_ip: str
    underlay: str
    service_cidr: str
    cgroup: str
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]
    services: tuple[ServicePlan, ...]
    ztunnel_args: tuple[str, ...] = ()
    """Appended to every node's ztunnel argv (`lab up --ztunnel-arg`): later flags win, so these override."""
    source: str = "file"
    """Where control and the agents read the lab's objects: its store directory, or a Kubernetes API server."""
    istio_compat: bool = False
    """Control and the agents run with `--istio-compat` (istio-system a root namespace, Istio's label enrolls)."""

    @property
    def prefix(self) -> str:
        return prefix_for(self.lab_id)

    @property
    def control_cgroup(self) -> str:
        return f"{self.cgroup}/control"

    @property
    def control_url(self) -> str:
        """Control listens on the host's address on the node network, so nodes reach it and labs never
        share a port."""
        return f"https://{self.host_ip}:{CONTROL_PORT}"

    @property
    def control_metrics(self) -> str:
        return f"http://{self.host_ip}:{CONTROL_METRICS_PORT}"

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def prefix_for(lab_id: str) -> str:
    """The prefix of every host-scope name of the lab `lab_id`."""
    return f"ml-{lab_id}-"


def check_id(lab_id: str) -> str:
    if not ID_PATTERN.fullmatch(lab_id):
        raise PlanError(
            f"lab id {lab_id!r} is invalid: use 1-8 lowercase letters and digits, starting with a letter "
            "(it prefixes interface names, which Linux caps at 15 characters)"
        )
    return lab_id


def plan_lab(
    lab_id: str,
    slot: int,
    nodes: int,
    pods_per_node: int,
    redirect: str = "auto",
    service_port_name: str = "http",
    service_app_protocol: str = "",
    ztunnel_args: tuple[str, ...] = (),
    source: str = "file",
    istio_compat: bool = False,
) -> LabPlan:
    """Plan a lab of `nodes` nodes with `pods_per_node` pods each, alternating mesh and plain namespaces; each
    namespace's `web` service has one port, named `service_port_name`, with `service_app_protocol` if set;
    `ztunnel_args` go to every node's ztunnel after the lab's own flags."""
    check_id(lab_id)
    if not 0 <= slot < MAX_SLOTS:
        raise PlanError(f"slot {slot} is out of range 0..{MAX_SLOTS - 1}")
    if not 1 <= nodes <= MAX_NODES:
        raise PlanError(f"--nodes {nodes}: a lab has 1 to {MAX_NODES} nodes")
    if not 1 <= pods_per_node <= MAX_PODS_PER_NODE:
        raise PlanError(f"--pods-per-node {pods_per_node}: a node has 1 to {MAX_PODS_PER_NODE} pods")
    if redirect not in REDIRECT_MODES:
        raise PlanError(f"--redirect {redirect!r}: choose one of {', '.join(REDIRECT_MODES)}")
    if not PORT_NAME_PATTERN.fullmatch(service_port_name) or "--" in service_port_name:
        raise PlanError(
            f"--service-port-name {service_port_name!r}: a port name is 1-15 lowercase letters, digits and single "
            "'-', starting and ending with a letter or digit (Kubernetes' IANA_SVC_NAME)"
        )
    if service_app_protocol and not APP_PROTOCOL_PATTERN.fullmatch(service_app_protocol):
        raise PlanError(
            f"--service-app-protocol {service_app_protocol!r}: expected a protocol name such as http, tcp, "
            "kubernetes.io/h2c"
        )
    if source not in SOURCES:
        raise PlanError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")
    if any(not arg for arg in ztunnel_args):
        raise PlanError("--ztunnel-arg: an empty argument (pass each flag and value as its own --ztunnel-arg)")
    prefix = prefix_for(lab_id)
    cgroup = f"{prefix}lab"
    node_plans: list[NodePlan] = []
    pod_plans: list[PodPlan] = []
    for i in range(1, nodes + 1):
        name = f"node{i}"
        pod_net = ipaddress.ip_network(f"10.244.{slot * MAX_NODES + i - 1}.0/24")
        node = NodePlan(
            name=name,
            index=i,
            netns=f"{prefix}{name}",
            host_link=f"{prefix}n{i}",
            ip=f"10.250.{slot}.{10 + i}",
            pod_cidr=str(pod_net),
            gateway=str(pod_net[1]),
            cgroup=f"{cgroup}/{name}/node",
        )
        node_plans.append(node)
        for j in range(pods_per_node):
            namespace = MESH_NAMESPACE if j % 2 == 0 else PLAIN_NAMESPACE
            pod_name = f"web-{i}{chr(ord('a') + j)}"
            pod_plans.append(
                PodPlan(
                    name=pod_name,
                    namespace=namespace,
                    node=name,
                    ip=str(pod_net[2 + j]),
                    netns=f"{prefix}{namespace}-{pod_name}",
                    node_link=f"veth{j}",
                    cgroup=f"{cgroup}/{name}/pods/{namespace}.{pod_name}",
                )
            )
    namespaces = sorted({p.namespace for p in pod_plans})
    services = tuple(
        ServicePlan("web", ns, f"10.96.{slot}.{10 + k}", service_port_name, service_app_protocol)
        for k, ns in enumerate(namespaces)
    )
    return LabPlan(
        lab_id=lab_id,
        slot=slot,
        redirect=redirect,
        bridge=f"{prefix}br",
        host_ip=f"10.250.{slot}.1",
        underlay=f"10.250.{slot}.0/24",
        service_cidr=f"10.96.{slot}.0/24",
        cgroup=cgroup,
        nodes=tuple(node_plans),
        pods=tuple(pod_plans),
        services=services,
        ztunnel_args=tuple(ztunnel_args),
        source=source,
        istio_compat=istio_compat,
    )
