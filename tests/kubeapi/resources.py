"""The resource types the test API server serves, and the discovery documents that describe them.

A resource type is group/version/kind/plural plus whether it is namespaced and has a /status subresource.
The built-in ones are the core v1 kinds a mesh reads (Namespaces, Pods, Services, ServiceAccounts, Events,
Nodes, ConfigMaps, Secrets), discovery.k8s.io/v1 EndpointSlices, what an install applies (apps/v1
Deployments, ReplicaSets and DaemonSets, rbac.authorization.k8s.io/v1, policy/v1 PodDisruptionBudgets) and
apiextensions.k8s.io/v1 CustomResourceDefinitions; a test adds
custom ones with `ResourceType.custom(...)` or by creating a CRD through the API, as a cluster would.
Discovery (/api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>) is what the official client and
kubectl read to map a kind to its URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and how the server treats it."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource: the main resource cannot change status
    builtin: bool = True  # strategic merge patch is only for built-in kinds
    return_deleted: bool = True  # DELETE answers the deleted object (else a Status of success)
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = tuple(VERBS)

    @staticmethod
    def custom(group: str, version: str, kind: str, plural: str, namespaced: bool = True) -> ResourceType:
        """A CRD-served resource (status subresource on, as the CRDs of a mesh declare it)."""
        return ResourceType(group, version, kind, plural, namespaced, status=True, builtin=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def storage(self) -> tuple[str, str]:
        """Where its objects are kept: one place for every version of a resource, as in etcd (a CRD serving v1 and
        v1beta1 shows the same objects through both, each answer in the version asked for)."""
        return (self.group, self.plural)

    def discovery(self) -> list[dict[str, Any]]:
        """The APIResource entries for this type (and its status subresource)."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        out = [entry]
        if self.status:
            out.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return out


TOKEN_REVIEW = ResourceType(
    "authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False, verbs=("create",)
)
SELF_SUBJECT_ACCESS_REVIEW = ResourceType(
    "authorization.k8s.io",
    "v1",
    "SelfSubjectAccessReview",
    "selfsubjectaccessreviews",
    namespaced=False,
    verbs=("create",),
)
CRD = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    namespaced=False,
    status=True,
    short_names=("crd", "crds"),
)

BUILTIN = [
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False, status=True, short_names=("ns",)),
    ResourceType("", "v1", "Pod", "pods", status=True, short_names=("po",)),
    ResourceType("", "v1", "Service", "services", status=True, short_names=("svc",)),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", return_deleted=True, short_names=("sa",)),
    ResourceType("", "v1", "Event", "events", return_deleted=False, short_names=("ev",)),
    ResourceType("", "v1", "Node", "nodes", namespaced=False, status=True, short_names=("no",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", return_deleted=False, short_names=("cm",)),
    ResourceType("", "v1", "Secret", "secrets", return_deleted=False),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", return_deleted=False),
    # What an install applies: workloads, RBAC, disruption budgets. No controller runs here, so a Deployment's or
    # DaemonSet's status stays what a test writes through /status.
    ResourceType("apps", "v1", "Deployment", "deployments", status=True, short_names=("deploy",)),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets", status=True, short_names=("ds",)),
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", status=True, short_names=("rs",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", status=True, short_names=("pdb",)),
    CRD,
    TOKEN_REVIEW,
    SELF_SUBJECT_ACCESS_REVIEW,
]


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    out = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        out.append(
            ResourceType(
                spec.get("group", ""),
                version["name"],
                names.get("kind", ""),
                names.get("plural", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                status="status" in (version.get("subresources") or {}),
                builtin=False,
                short_names=tuple(names.get("shortNames", ())),
            )
        )
    return out


def crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    """What the apiextensions controllers write once a CRD's names are accepted and its resource is served."""
    spec = crd.get("spec", {})
    at = crd.get("metadata", {}).get("creationTimestamp")
    conditions = [
        {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at}
        for kind, reason, message in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        )
    ]
    stored = [v["name"] for v in spec.get("versions", []) if v.get("storage")]
    return {"conditions": conditions, "acceptedNames": dict(spec.get("names", {})), "storedVersions": stored}


def core_versions(address: str) -> dict[str, Any]:
    """GET /api."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def resource_list(group_version: str, types: list[ResourceType]) -> dict[str, Any]:
    """GET /api/v1 or /apis/<group>/<version>."""
    resources = [entry for t in types for entry in t.discovery()]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def api_group(group: str, versions: list[str]) -> dict[str, Any]:
    """One APIGroup: its versions, the first being preferred."""
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries, "preferredVersion": entries[0]}


def group_list(types: list[ResourceType]) -> dict[str, Any]:
    """GET /apis: every non-core group with its versions."""
    groups: dict[str, list[str]] = {}
    for t in types:
        if t.group and t.version not in groups.setdefault(t.group, []):
            groups[t.group].append(t.version)
    items = []
    for name, versions in groups.items():
        group = api_group(name, versions)
        del group["kind"], group["apiVersion"]
        items.append(group)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}


VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
