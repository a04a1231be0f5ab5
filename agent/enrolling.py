"""Which pods of this node are enrolled, from the store's Namespaces and Pods (pure).

The rule is control's (`control.model.mesh.enrolled`): namespace label `ambient` enrolls, pod label
`none` opts out, host-network pods never. The agent reads the same store through the same source and
model as control, so the two can never disagree on what a label means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from control.model.kube import Namespace, Pod
from control.model.mesh import MeshSettings, enrolled


@dataclass(frozen=True, slots=True)
class PodTarget:
    """A pod of this node as the agent handles it."""

    uid: str
    name: str
    namespace: str
    service_account: str
    ips: tuple[str, ...]
    enrolled: bool

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def node_pods(objects: Iterable[object], node: str, settings: MeshSettings) -> dict[str, PodTarget]:
    """Every running pod with an IP scheduled on `node`, enrolled or not, by uid."""
    namespaces: dict[str, Namespace] = {}
    pods: list[Pod] = []
    for obj in objects:
        if isinstance(obj, Namespace):
            namespaces[obj.name] = obj
        elif isinstance(obj, Pod) and obj.node == node and obj.running and obj.ips and not obj.host_network:
            pods.append(obj)
    return {
        p.uid: PodTarget(
            uid=p.uid,
            name=p.name,
            namespace=p.namespace,
            service_account=p.service_account,
            ips=p.ips,
            enrolled=enrolled(p, namespaces.get(p.namespace), settings),
        )
        for p in pods
    }
