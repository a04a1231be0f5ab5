"""`meshlet lab up|down|status`: build the planned lab in the kernel, record it, and take it apart again.

`up` saves the lab's state before touching the kernel and after every step, so whatever a crash leaves
behind, `down` (or the next `up` under the same id) finds and removes it: by the state file, and by the
lab's name prefix for anything the state file could not record. `down` is safe to run twice.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlet.lab import kernel, kube_mesh, mesh, processes
from meshlet.lab.apps import AppsState
from meshlet.lab.objects import lab_objects
from meshlet.lab.plan import APP_PORT, LabPlan, NodePlan, PlanError, PodPlan, plan_lab, prefix_for
from meshlet.lab.state import LabState, free_slot, known_labs, lab_dir, locked
from meshlet.lab.store import write_objects
from meshlet_contracts.bpf_maps import PIN_ROOT
from meshlet_contracts.mesh_config import DATAPLANE_LABEL

READY_TIMEOUT = 20.0


class LabError(RuntimeError):
    """The lab could not be brought up or inspected; the message says what to do."""


@dataclass(slots=True)
class Removed:
    """What `down` found and removed (empty lists: nothing was there)."""

    processes: list[int] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    bpf: list[str] = field(default_factory=list)
    directory: str | None = None


def up(
    lab_id: str,
    nodes: int,
    pods_per_node: int,
    redirect: str,
    node_daemons: bool = True,
    service_port_name: str = "http",
    service_app_protocol: str = "",
    ztunnel_args: tuple[str, ...] = (),
    source: str = "file",
    istio_compat: bool = False,
) -> LabState:
    with locked():
        if LabState.load(lab_id) is not None or _leftovers(lab_id):
            _down(lab_id)
        plan = plan_lab(
            lab_id,
            free_slot(lab_id),
            nodes,
            pods_per_node,
            redirect,
            service_port_name,
            service_app_protocol,
            ztunnel_args,
            source,
            istio_compat,
        )
        _check_addresses_free(plan)
        directory = lab_dir(lab_id)
        directory.mkdir(parents=True, exist_ok=True)
        state = LabState(plan=plan, directory=str(directory))
        state.save()
        try:
            _build(plan)
            if plan.source == "kubernetes":
                state.processes["kubeapi"] = kube_mesh.start_api(state)
                state.save()
                kube_mesh.seed(state)
            else:
                write_objects(state.store, lab_objects(plan))
                mesh.provision_nodes(state)
            state.processes["control"] = mesh.start_control(state)
            state.save()
            for pod in plan.pods:
                state.processes[f"app/{pod.namespace}/{pod.name}"] = start_app(state, pod)
                state.save()
            for pod in plan.pods:
                wait_ready(pod, Path(state.processes[f"app/{pod.namespace}/{pod.name}"].log))
            mesh.wait_control_ready(plan, state.processes["control"])
            for node in plan.nodes if plan.source == "kubernetes" else ():
                credentials = mesh.node_credential_dir(state, node.name)
                kube_mesh.node_identity(state, node, credentials / "token", credentials / "root-cert.pem")
            for node in plan.nodes if node_daemons else ():
                state.processes.update(mesh.start_node(state, node))
                state.save()
            for node in plan.nodes if node_daemons else ():
                mesh.wait_node_ready(state, node)
        except BaseException:
            _down(lab_id)
            raise
        state.ready = True
        state.save()
        return state


def down(lab_id: str) -> Removed:
    with locked():
        return _down(lab_id)


def load(lab_id: str) -> LabState:
    state = LabState.load(lab_id)
    if state is None:
        labs = known_labs()
        others = f"labs here: {', '.join(labs)}" if labs else f"start one with `meshlet lab --id {lab_id} up`"
        raise LabError(f"no lab {lab_id!r} is up (looked in {lab_dir(lab_id)}); {others}")
    return state


def _leftovers(lab_id: str) -> bool:
    prefix = prefix_for(lab_id)
    return (
        any(n.startswith(prefix) for n in kernel.netns_list())
        or any(link["ifname"].startswith(prefix) for link in kernel.links())
        or kernel.cgroup_path(f"{prefix}lab").exists()
        or (PIN_ROOT.is_dir() and any(PIN_ROOT.glob(f"{prefix}*")))
    )


def _check_addresses_free(plan: LabPlan) -> None:
    """Refuse to build over a route the host already has: the lab's subnets must be its own."""
    ours = [ipaddress.ip_network(n) for n in (plan.underlay, *(node.pod_cidr for node in plan.nodes))]
    for route in kernel.routes():
        dst = route.get("dst", "default")
        if dst == "default":
            continue
        net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        for mine in ours:
            if net.overlaps(mine):
                raise LabError(
                    f"the lab subnet {mine} overlaps the host route {dst} dev {route.get('dev')}; "
                    "another lab id gets another slot, or remove that route"
                )


def _build(plan: LabPlan) -> None:
    kernel.ip_batch(
        [
            f"link add name {plan.bridge} address {bridge_mac(plan.host_ip)} type bridge",
            f"addr add {plan.host_ip}/24 dev {plan.bridge}",
            f"link set {plan.bridge} up",
        ]
    )
    kernel.cgroup_create(plan.cgroup)
    for node in plan.nodes:
        kernel.netns_add(node.netns)
        kernel.ip_batch(
            [
                f"link add {node.host_link} type veth peer name eth0 netns {node.netns}",
                f"link set {node.host_link} master {plan.bridge} up",
                # The host routes each pod CIDR to its node, so replies from the host (control) to pods
                # stay in the lab; the routes go away with the bridge.
                f"route add {node.pod_cidr} via {node.ip} dev {plan.bridge}",
            ]
        )
        other_nodes = [n for n in plan.nodes if n is not node]
        kernel.ip_batch(
            [
                "link set lo up",
                f"addr add {node.ip}/24 dev eth0",
                "link set eth0 up",
                f"link add br0 address {bridge_mac(node.gateway)} type bridge",
                f"addr add {node.gateway}/24 dev br0",
                "link set br0 up",
                # No default route on purpose: pod traffic to anything outside the lab stops here.
                *(f"route add {n.pod_cidr} via {n.ip}" for n in other_nodes),
            ],
            netns=node.netns,
        )
        kernel.sysctl(node.netns, "net.ipv4.ip_forward", "1")
        kernel.cgroup_create(node.cgroup)
    for pod in plan.pods:
        pod_network(plan, pod)
        kernel.cgroup_create(pod.cgroup)


def bridge_mac(gateway: str) -> str:
    """A fixed, locally administered MAC for the bridge whose address is `gateway` (one bridge per L2 segment,
    so unique there). A bridge left to choose takes the lowest MAC of its ports and changes it as pods come
    and go; the pods' ARP entries for their gateway then name a MAC the bridge no longer answers to, and their
    traffic is lost until the entry is probed again (about a minute of SYNs into nothing). Setting one, as
    the bridge CNI plugin does, pins it."""
    return "02:6d:" + ":".join(f"{o:02x}" for o in ipaddress.IPv4Address(gateway).packed)


def pod_network(plan: LabPlan, pod: PodPlan) -> None:
    """The pod's netns, its veth to the node's bridge, its IP and default route (also used by tests that
    recreate a pod's netns the way a restarted sandbox would)."""
    node = plan.node(pod.node)
    kernel.netns_add(pod.netns)
    kernel.ip_batch(
        [
            f"link add {pod.node_link} type veth peer name eth0 netns {pod.netns}",
            f"link set {pod.node_link} master br0 up",
        ],
        netns=node.netns,
    )
    kernel.ip_batch(
        [
            "link set lo up",
            f"addr add {pod.ip}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {node.gateway}",
        ],
        netns=pod.netns,
    )
    # A pod given the IP of one deleted moments ago has a new MAC: the node and its pods must hear of it.
    kernel.gratuitous_arp(pod.netns, "eth0", pod.ip)


def start_app(
    state: LabState, pod: PodPlan, log_suffix: str = "", env: Mapping[str, str] | None = None
) -> processes.Started:
    """The sample app in the pod; `env` adds to its environment (a Deployment's ECHO_* steering)."""
    argv = processes.python_module(
        "meshlet.lab.app", "--pod", pod.name, "--namespace", pod.namespace, "--node", pod.node, "--ip", pod.ip
    )
    log = state.logs / f"app.{pod.namespace}.{pod.name}{log_suffix}.log"
    return processes.spawn(argv, pod.netns, pod.cgroup, log, dict(env) if env else None)


def http_get(netns: str, ip: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """One HTTP/1.0 GET from inside `netns`; returns (status, body)."""
    with kernel.entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def wait_ready(pod: PodPlan, log: Path) -> None:
    """Wait for the pod's readiness probe, sent from its node as kubelet would."""
    deadline = time.monotonic() + READY_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if http_get(pod.netns, pod.ip, APP_PORT, "/healthz")[0] == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise LabError(f"pod {pod.namespace}/{pod.name} not ready after {READY_TIMEOUT:.0f}s ({last}); see {log}")


def _down(lab_id: str) -> Removed:
    removed = Removed()
    prefix = prefix_for(lab_id)
    try:
        state = LabState.load(lab_id)
    except PlanError:
        state = None  # unreadable state: the prefix scan below still finds everything
    cg_root = kernel.cgroup_path(f"{prefix}lab")
    removed.processes = kernel.cgroup_pids(cg_root)
    kernel.cgroup_stop(cg_root)
    if state is not None:
        # Anything recorded but outside the cgroups (it should not happen) is ended by PID, if it is
        # still the very process we started.
        for started in state.processes.values():
            if processes.is_running(started):
                os.kill(started.pid, signal.SIGKILL)
                removed.processes.append(started.pid)
    for name in kernel.netns_list():
        if name.startswith(prefix):
            kernel.netns_delete(name)
            removed.netns.append(name)
    for link in kernel.links():
        if link["ifname"].startswith(prefix):
            kernel.link_delete(link["ifname"])
            removed.links.append(link["ifname"])
    if cg_root.exists():
        removed.cgroups = [str(p) for p in cg_root.rglob("*") if p.is_dir()] + [str(cg_root)]
        kernel.cgroup_remove(cg_root)
    # BPF pins: the cgroups and netns the programs were attached to are gone, so unpinning frees them.
    if PIN_ROOT.is_dir():
        for pins in PIN_ROOT.glob(f"{prefix}*"):
            shutil.rmtree(pins, ignore_errors=True)
            removed.bpf.append(str(pins))
    directory = lab_dir(lab_id)
    if directory.exists():
        shutil.rmtree(directory)
        removed.directory = str(directory)
    return removed


def _enrolled_pods(state: LabState) -> set[tuple[str, str]]:
    """(namespace, name) of the pods the store's labels enroll now (labels may have changed since `up`),
    by control's own rule; the agent, when running, decides and reports actual capture."""
    # Imported here: the rest of this module serves every `meshlet lab` command (`exec` among them, run
    # hundreds of times by scripts and tests), which should not pay for control's model and store.
    from control.model.kube import Namespace, Pod
    from control.model.mesh import MeshSettings, enrolled
    from control.sources.base import SourceBatch
    from control.sources.files import FileSource
    from control.store import ConfigStore

    store = ConfigStore(MeshSettings(dataplane_label=DATAPLANE_LABEL, istio_compat=state.plan.istio_compat))
    if state.plan.source == "kubernetes":
        store.apply([SourceBatch("kubernetes", tuple(kube_mesh.enrollment_objects(state)))])
    else:
        store.apply(FileSource(state.store).scan())  # invalid objects are skipped here; control reports them
    namespaces = {o.name: o for o in store.objects.values() if isinstance(o, Namespace)}
    return {
        (o.namespace, o.name)
        for o in store.objects.values()
        if isinstance(o, Pod) and enrolled(o, namespaces.get(o.namespace), store.settings)
    }


def _running(state: LabState, key: str) -> str:
    started = state.processes.get(key)  # absent when `up` crashed before starting it
    return "running" if started is not None and processes.is_running(started) else "stopped"


def all_pods(state: LabState) -> list[PodPlan]:
    """The pods of `up` and those of the Deployments `lab apply` made."""
    return [*state.plan.pods, *(p.pod for p in AppsState.from_json(state.apps).pods)]


def status(lab_id: str) -> dict[str, Any]:
    """The lab as `meshlet lab status -o json` reports it (a contract for tests and scripts)."""
    state = load(lab_id)
    plan = state.plan
    enrolled_pods = _enrolled_pods(state)
    applied = AppsState.from_json(state.apps)

    return {
        "id": plan.lab_id,
        "ready": state.ready,
        "redirect": plan.redirect,
        "directory": state.directory,
        "source": plan.source,
        "istioCompat": plan.istio_compat,
        "store": str(state.store) if plan.source == "file" else None,
        "apiServer": kube_mesh.api_url(state) if plan.source == "kubernetes" else None,
        "underlay": plan.underlay,
        "control": {
            "url": plan.control_url,
            "metrics": plan.control_metrics,
            "running": _running(state, "control") == "running",
        },
        "nodes": [
            {
                "name": n.name,
                "ip": n.ip,
                "podCIDR": n.pod_cidr,
                "gateway": n.gateway,
                "netns": n.netns,
                "agent": _running(state, f"agent/{n.name}"),
                "ztunnel": _running(state, f"ztunnel/{n.name}"),
                "agentSocket": str(mesh.node_run_dir(state, n.name) / "agent.sock"),
            }
            for n in plan.nodes
        ],
        "pods": [
            {
                "name": p.name,
                "namespace": p.namespace,
                "node": p.node,
                "ip": p.ip,
                "enrolled": (p.namespace, p.name) in enrolled_pods,
                "netns": p.netns,
                "app": _running(state, f"app/{p.namespace}/{p.name}"),
            }
            for p in all_pods(state)
        ],
        "services": [{"name": s.name, "namespace": s.namespace, "vip": s.vip} for s in plan.services]
        + [
            {"name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"], "vip": o["spec"]["clusterIP"]}
            for o in applied.objects.values()
            if o["kind"] == "Service"
        ],
    }


def target(lab_id: str, name: str) -> tuple[str, str]:
    """(netns, cgroup) of a node or pod named `name`, `pod` or `namespace/pod`."""
    found = _named(lab_id, name)
    return found.netns, found.cgroup


def ip_of(lab_id: str, name: str) -> str:
    """The IP of a node or pod named `name`, `pod` or `namespace/pod` (`meshlet lab ip`)."""
    return _named(lab_id, name).ip


def _named(lab_id: str, name: str) -> NodePlan | PodPlan:
    state = load(lab_id)
    plan = state.plan
    for node in plan.nodes:
        if name == node.name:
            return node
    ns, _, pod_name = name.rpartition("/")
    pods = all_pods(state)
    matches = [p for p in pods if p.name == pod_name and ns in ("", p.namespace)]
    if len(matches) == 1:
        return matches[0]
    known = [n.name for n in plan.nodes] + [f"{p.namespace}/{p.name}" for p in pods]
    if not matches:
        raise LabError(f"no node or pod {name!r} in lab {lab_id!r}; known: {', '.join(known)}")
    raise LabError(f"{name!r} is ambiguous in lab {lab_id!r}; use namespace/name")
