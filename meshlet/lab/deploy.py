"""`meshlet lab apply|delete -f FILE` in the kernel: carry out what `meshlet.lab.apps` planned.

Pods of a Deployment are built like the pods of `lab up` (netns, veth to the node's bridge, cgroup, the
sample app, given the ECHO_* variables of the Deployment's container), and their Pod objects are written only
once the app answers its readiness probe, so control never sends traffic to a pod that cannot take it. Removal
runs the other way: the objects go first (the mesh stops routing to them), then the processes, the netns and
the cgroups. The lab state is saved after every step, so `lab down` removes whatever a failed apply left.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from meshlet.lab import kernel, kube_mesh
from meshlet.lab.apps import AppPod, AppsState, Change, load_manifests, plan_apply, plan_delete
from meshlet.lab.apps_objects import Obj, app_env, key_of
from meshlet.lab.cluster import load, pod_network, start_app, wait_ready
from meshlet.lab.state import LabState, locked
from meshlet.lab.store import remove_objects, write_objects


def read_manifests(path: str) -> list[Obj]:
    """The objects in the file `path` (`-` for stdin)."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return load_manifests(text, "<stdin>" if path == "-" else path)


def apply(lab_id: str, manifests: list[Obj]) -> Change:
    """Make the lab hold what the manifests say; returns what was done."""
    with locked():
        state = load(lab_id)
        change = plan_apply(state.plan, AppsState.from_json(state.apps), manifests)
        _carry_out(state, change)
        return change


def delete(lab_id: str, manifests: list[Obj]) -> Change:
    """Remove what the manifests name from the lab; returns what was done."""
    with locked():
        state = load(lab_id)
        change = plan_delete(state.plan, AppsState.from_json(state.apps), manifests)
        _carry_out(state, change)
        return change


def _carry_out(state: LabState, change: Change) -> None:
    before = AppsState.from_json(state.apps)
    if state.plan.source == "kubernetes":
        kube_mesh.delete_objects(state, change.remove)
    else:
        remove_objects(state.store, change.remove)
    for pod in change.stop:
        _stop_pod(state, pod)
    # Until the new objects are written the state holds the old ones and the new pods: a crash half way
    # leaves pods `down` knows, and objects a later apply still writes.
    removed = {key_of(o) for o in change.remove}
    partial = AppsState(
        {k: o for k, o in before.objects.items() if k not in removed},
        [p for p in before.pods if p not in change.stop] + change.start,
    )
    state.apps = partial.to_json()
    state.save()
    try:
        for pod in change.start:
            pod_network(state.plan, pod.pod)
            kernel.cgroup_create(pod.pod.cgroup)
            deployment = change.state.objects.get(f"Deployment/{pod.pod.namespace}/{pod.deployment}")
            env = app_env(deployment) if deployment is not None else {}
            state.processes[_key(pod)] = start_app(state, pod.pod, env=env)
            state.save()
        for pod in change.start:
            wait_ready(pod.pod, Path(state.processes[_key(pod)].log))
    except BaseException:
        for pod in change.start:  # no half-made pods stay behind: the next apply starts them afresh
            _stop_pod(state, pod)
        partial.pods = [p for p in partial.pods if p not in change.start]
        state.apps = partial.to_json()
        state.save()
        raise
    if state.plan.source == "kubernetes":
        kube_mesh.apply_objects(state, change.write)
    else:
        write_objects(state.store, change.write)
    state.apps = change.state.to_json()
    state.save()


def _stop_pod(state: LabState, pod: AppPod) -> None:
    cgroup = kernel.cgroup_path(pod.pod.cgroup)
    kernel.cgroup_stop(cgroup)  # each of these steps is a no-op when already done (a retried delete)
    # The node's end of the veth first, at once: deleting the netns frees its links later, in the kernel's own
    # time, and a pod started meanwhile with the same address (a scale down and up) would find its name taken.
    with contextlib.suppress(kernel.KernelError):
        kernel.ip_batch([f"link delete {pod.pod.node_link}"], netns=state.plan.node(pod.pod.node).netns)
    kernel.netns_delete(pod.pod.netns)
    kernel.cgroup_remove(cgroup)
    state.processes.pop(_key(pod), None)
    state.save()


def _key(pod: AppPod) -> str:
    return f"app/{pod.pod.namespace}/{pod.pod.name}"
