"""Mesh-wide settings that control decides and every node proxy follows: the root namespaces, the enrolling labels.

The root namespaces travel on the config stream, as the optional top-level `mesh` object of every snapshot and
delta (`{"rootNamespaces": ["meshlet-system"]}`), so one control setting reaches every ztunnel and changes with
no ztunnel restart. A message without it (from a control before it) leaves a ztunnel on its own
`--root-namespace`; a ztunnel before it ignores the field, as it ignores any top-level key it does not read, and
keeps applying its own flag. A ztunnel echoes the roots it applies in each ack, so control names (in its warnings)
every ztunnel that applies others: with `--istio-compat`, an old ztunnel would not apply istio-system's policies.

Istio compatibility (`control serve --istio-compat`, the agent's flag of the same name) adds Istio's names to
meshlet's own: `istio-system` becomes a second root namespace, and `istio.io/dataplane-mode` enrolls and opts
out as `meshlet.io/dataplane-mode` does. Without it, both are ignored, and control warns where they are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from meshlet_contracts.identity import DNS_LABEL

ROOT_NAMESPACE = "meshlet-system"
"""meshlet's root namespace: its policies without a selector govern every workload of the mesh."""
ISTIO_ROOT_NAMESPACE = "istio-system"
DATAPLANE_LABEL = "meshlet.io/dataplane-mode"
"""Namespace label (value `ambient`) that enrolls its pods, and pod label (value `none`) that opts one out."""
ISTIO_DATAPLANE_LABEL = "istio.io/dataplane-mode"
MESH_KEY = "mesh"
"""The top-level key of snapshot and delta messages that carries `MeshItem`."""


class MeshItem(TypedDict):
    rootNamespaces: list[str]
    """Namespaces whose policies apply to every workload; the first one's mesh-wide PeerAuthentication wins
    when several roots have one."""


class MeshConfigError(ValueError):
    """The `mesh` object of a config message does not follow its schema."""


def root_namespaces(root: str, istio_compat: bool) -> tuple[str, ...]:
    """The root namespaces control sends: its `--root-namespace`, and Istio's with compatibility on."""
    return (root, ISTIO_ROOT_NAMESPACE) if istio_compat and root != ISTIO_ROOT_NAMESPACE else (root,)


def dataplane_labels(label: str, istio_compat: bool) -> tuple[str, ...]:
    """The label keys that enroll (namespace `ambient`) and opt out (pod `none`)."""
    return (label, ISTIO_DATAPLANE_LABEL) if istio_compat and label != ISTIO_DATAPLANE_LABEL else (label,)


def mesh_item(roots: tuple[str, ...]) -> MeshItem:
    return {"rootNamespaces": list(roots)}


def parse_mesh(raw: object) -> tuple[str, ...]:
    """The root namespaces of a message's `mesh` object, or MeshConfigError naming the field."""
    if not isinstance(raw, Mapping):
        raise MeshConfigError(f"mesh: expected an object, got {type(raw).__name__}")
    roots = raw.get("rootNamespaces")
    if not isinstance(roots, list) or not roots:
        raise MeshConfigError("mesh.rootNamespaces: expected a non-empty list of namespaces")
    for i, name in enumerate(roots):
        if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
            raise MeshConfigError(f"mesh.rootNamespaces[{i}]: {name!r} is not a namespace name (a DNS-1123 label)")
    return tuple(dict.fromkeys(roots))  # order kept, duplicates dropped
