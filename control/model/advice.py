"""Warnings about valid objects that will not do what their author most likely meant.

Nothing here is an error: every object warned about is accepted and sent. These are the silent surprises a user
coming from Istio meets first, said once, with what to do instead:
- a policy in a namespace where it can select nothing (no enrolled workload there and not a root namespace),
  or whose selector matches no enrolled workload;
- Istio's enrolling label (`istio.io/dataplane-mode`) on a Namespace or Pod while Istio compatibility is off;
- mesh-wide PeerAuthentications setting a mode in two root namespaces (the first root's wins).

`mesh_warnings` is a pure function of the current objects: control's advisor (control/advisor.py) works it out
after changes settle, off the event loop; `meshlet status` and `meshlet validate` show what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from control.model.fields import ObjectKey
from control.model.kube import Namespace, Pod
from control.model.mesh import MeshSettings, enrolled
from control.model.security import AuthorizationPolicy, PeerAuthentication
from meshlet_contracts.mesh_config import ISTIO_DATAPLANE_LABEL, ISTIO_ROOT_NAMESPACE
from meshlet_contracts.policy import selects

Policy = AuthorizationPolicy | PeerAuthentication
COMPAT_HINT = "run control and the agents with --istio-compat"


@dataclass(frozen=True, slots=True)
class MeshWarning:
    code: str
    """Stable, for scripts: `policy-in-empty-namespace`, `selector-matches-nothing`, `istio-label-ignored`,
    `mesh-wide-mode-shadowed`."""
    key: ObjectKey
    """The object warned about."""
    message: str

    @property
    def object(self) -> str:
        return str(self.key)

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "object": self.object, "message": self.message}

    def __str__(self) -> str:
        return f"{self.object}: {self.message}"


def mesh_warnings(objects: Iterable[object], settings: MeshSettings, workloads_known: bool = True) -> list[MeshWarning]:
    """Every warning about `objects`, sorted by object. `workloads_known` False (files checked offline, with no
    cluster's pods): only what the objects alone show."""
    namespaces: dict[str, Namespace] = {}
    pods: list[Pod] = []
    policies: list[Policy] = []
    for obj in objects:
        if isinstance(obj, Namespace):
            namespaces[obj.name] = obj
        elif isinstance(obj, Pod):
            pods.append(obj)
        elif isinstance(obj, AuthorizationPolicy | PeerAuthentication):
            policies.append(obj)
    members: dict[str, list[Mapping[str, str]]] = {}
    for pod in pods:
        if pod.phase not in ("Succeeded", "Failed") and enrolled(pod, namespaces.get(pod.namespace), settings):
            members.setdefault(pod.namespace, []).append(dict(pod.labels))
    found = [
        *_label_warnings(namespaces.values(), pods, settings),
        *_policy_warnings(policies, members, settings, workloads_known),
        *_shadowed_modes(policies, settings),
    ]
    return sorted(found, key=lambda w: (w.object, w.code))


def _policy_warnings(
    policies: list[Policy], members: dict[str, list[Mapping[str, str]]], settings: MeshSettings, known: bool
) -> Iterable[MeshWarning]:
    roots = settings.root_namespaces
    everyone = [m for ms in members.values() for m in ms]
    for p in policies:
        # A root's AuthorizationPolicies select across the mesh; its PeerAuthentications with a selector, only in
        # the root namespace itself (as Istio's): those are judged as any namespace's.
        if p.namespace in roots and (isinstance(p, AuthorizationPolicy) or not p.selector):
            if known and p.selector and not any(selects(p.selector, m) for m in everyone):
                nothing = f"selector {_labels(p.selector)} matches no enrolled workload of the mesh"
                yield MeshWarning("selector-matches-nothing", p.key, nothing)
            continue
        empty = known and not members.get(p.namespace)
        if p.namespace == ISTIO_ROOT_NAMESPACE and not settings.istio_compat and (empty or not known):
            reach = "nothing" if known else f"workloads of {ISTIO_ROOT_NAMESPACE} only"
            yield MeshWarning(
                "policy-in-empty-namespace", p.key,
                f"{ISTIO_ROOT_NAMESPACE} is Istio's root namespace, not meshlet's ({', '.join(roots)}): this policy "
                f"applies to {reach}; move it to {roots[0]}, or {COMPAT_HINT}",
            )  # fmt: skip
        elif empty:
            if p.namespace in roots:
                why = f"a PeerAuthentication with a selector applies in its own namespace only, and {p.namespace} has"
            else:
                why = f"namespace {p.namespace} is not a root namespace ({', '.join(roots)}) and has"
            why += " no enrolled workload"
            yield MeshWarning("policy-in-empty-namespace", p.key, f"{why}: this policy applies to nothing")
        elif known and p.selector and not any(selects(p.selector, m) for m in members[p.namespace]):
            yield MeshWarning("selector-matches-nothing", p.key,
                              f"selector {_labels(p.selector)} matches no enrolled workload of namespace "
                              f"{p.namespace}")  # fmt: skip


def _label_warnings(namespaces: Iterable[Namespace], pods: list[Pod], settings: MeshSettings) -> Iterable[MeshWarning]:
    if ISTIO_DATAPLANE_LABEL in settings.dataplane_labels:
        return
    ours = settings.dataplane_label
    for ns in namespaces:
        value = dict(ns.labels).get(ISTIO_DATAPLANE_LABEL)
        if value is not None:
            yield MeshWarning(
                "istio-label-ignored", ns.key,
                f"label {ISTIO_DATAPLANE_LABEL}={value} is Istio's and does not enroll here: "
                f"label it {ours}={value}, or {COMPAT_HINT}",
            )  # fmt: skip
    for pod in pods:
        if dict(pod.labels).get(ISTIO_DATAPLANE_LABEL) == "none":
            yield MeshWarning(
                "istio-label-ignored", pod.key,
                f"label {ISTIO_DATAPLANE_LABEL}=none is Istio's and does not opt the pod out here: "
                f"label it {ours}=none, or {COMPAT_HINT}",
            )  # fmt: skip


def _shadowed_modes(policies: list[Policy], settings: MeshSettings) -> Iterable[MeshWarning]:
    mesh_wide = [
        min((p for p in policies if isinstance(p, PeerAuthentication) and p.namespace == root and not p.selector),
            key=lambda p: p.name, default=None)
        for root in settings.root_namespaces
    ]  # fmt: skip
    present = [p for p in mesh_wide if p is not None and p.mode != "UNSET"]  # UNSET defers to the next root
    for p in present[1:]:
        yield MeshWarning(
            "mesh-wide-mode-shadowed", p.key,
            f"{present[0].key} sets the mesh-wide mTLS mode ({present[0].mode}): the first root namespace's "
            f"that sets one wins, so this one's {p.mode} applies to nothing",
        )  # fmt: skip


def _labels(selector: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector)
