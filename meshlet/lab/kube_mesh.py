"""A lab whose source of truth is a Kubernetes API server (`meshlet lab up --source kubernetes`).

The lab runs the repository's test API server (`python -m tests.kubeapi`, the real REST and watch protocol) on
the host's node-network address and plays what a cluster's admin, scheduler and kubelets would do: it installs
meshlet's CRDs (and Gateway API's HTTPRoute), creates the lab's Namespaces, Nodes, ServiceAccounts, Services and
Pods through the API (each pod's status written as a kubelet reports it), and gives each node's ztunnel what the
DaemonSet gives it on a cluster: a pod of its own (`meshlet-system/meshlet-node-<node>`, service account
`meshlet-node`) and a projected ServiceAccount token for it from the TokenRequest API (audience `meshlet`), plus
the mesh root that control publishes in the `meshlet-root-cert` ConfigMap. Control and the agents then watch the
API server; nothing is read from a store directory.

The test API server ships with the source tree only (tests/kubeapi); an installation without it gets an error
that says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import meshlet
from meshlet.lab import kernel, processes
from meshlet.lab.kube_objects import LabApi, LabApiError
from meshlet.lab.mesh import MeshStartError
from meshlet.lab.objects import LAB_LABEL, lab_objects
from meshlet.lab.plan import NodePlan
from meshlet.lab.state import LabState

API_PORT = 6443
FAULTS_PORT = 6444
"""The test API server's fault-injection port (restart, compact, drop watches, outage), for the e2e tests."""
SYSTEM_NAMESPACE = "meshlet-system"
NODE_ACCOUNT = "meshlet-node"
TOKEN_AUDIENCE = "meshlet"
TOKEN_SECONDS = 24 * 3600
"""A lab lives for hours at most and has no kubelet to rotate the token: one day covers it."""
ROOT_CONFIGMAP = "meshlet-root-cert"
READY_TIMEOUT = 20.0
OTHER_CRDS = [
    ("gateway.networking.k8s.io", "HTTPRoute", "httproutes"),  # Gateway API, which meshlet routes with
    ("security.istio.io", "AuthorizationPolicy", "authorizationpolicies"),  # Istio's, as a user moving over has
    ("security.istio.io", "PeerAuthentication", "peerauthentications"),
]
SOURCE_ROOT = Path(meshlet.__file__).resolve().parents[1]


class KubeLabError(MeshStartError):
    """The lab's API server (or what the lab asked of it) failed; the message says what and where."""


def kubeconfig(state: LabState) -> Path:
    return Path(state.directory) / "kubeconfig"


def api_url(state: LabState) -> str:
    return f"http://{state.plan.host_ip}:{API_PORT}"


def start_api(state: LabState) -> processes.Started:
    """Start the test API server on the host's lab address; returns once it answers."""
    if not (SOURCE_ROOT / "tests" / "kubeapi" / "server.py").is_file():
        raise KubeLabError(
            "--source kubernetes needs the test API server of a source checkout (tests/kubeapi), which this "
            f"installation ({SOURCE_ROOT}) does not have"
        )
    cgroup = f"{state.plan.cgroup}/kubeapi"
    kernel.cgroup_create(cgroup)
    argv = processes.python_module(
        "tests.kubeapi", "--listen", f"{state.plan.host_ip}:{API_PORT}", "--kubeconfig", str(kubeconfig(state)),
        "--faults", f"{state.plan.host_ip}:{FAULTS_PORT}",
    )  # fmt: skip
    started = processes.spawn(argv, None, cgroup, state.logs / "kubeapi.log", env={"PYTHONPATH": str(SOURCE_ROOT)})
    deadline = time.monotonic() + READY_TIMEOUT
    while not kubeconfig(state).is_file():
        if not processes.is_running(started) or time.monotonic() > deadline:
            raise KubeLabError(f"the test API server did not start; see {started.log}")
        time.sleep(0.05)
    return started


def _open_crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    """Another project's CRD as a cluster that installed it serves it (schema left open: the lab's objects are
    checked by control's validation, not by the upstream schema)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced",
            # v1beta1 beside v1, as Istio's and Gateway API's CRDs serve it: YAML written for either applies.
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == "v1",
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
                for version in ("v1", "v1beta1")
            ],
        },
    }


def ztunnel_pod(state: LabState, node: NodePlan) -> dict[str, Any]:
    """The node's DaemonSet pod as the API server knows it: what control checks a ztunnel's token against."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{NODE_ACCOUNT}-{node.name}",
            "namespace": SYSTEM_NAMESPACE,
            "labels": {"app.kubernetes.io/name": NODE_ACCOUNT, LAB_LABEL: state.plan.lab_id},
        },
        "spec": {
            "nodeName": node.name,
            "serviceAccountName": NODE_ACCOUNT,
            "containers": [{"name": "ztunnel", "image": "meshlet.io/meshlet:lab"}],
        },
        "status": {"phase": "Running", "hostIP": node.ip, "podIP": node.ip, "podIPs": [{"ip": node.ip}]},
    }


def seed(state: LabState) -> None:
    """The cluster's starting state: CRDs, the lab's objects, meshlet-system with a ztunnel pod per node."""
    from daemonset.crds import crds  # here: every `meshlet lab` command imports this module, few seed a cluster

    api = LabApi(kubeconfig(state))
    try:
        for crd in [*crds(), *(_open_crd(*c) for c in OTHER_CRDS)]:
            api.apply(crd)
        system = [  # lab_objects holds the Namespace (the mesh's root)
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": NODE_ACCOUNT, "namespace": SYSTEM_NAMESPACE},
            },
        ]
        api.apply_all([*lab_objects(state.plan), *system, *(ztunnel_pod(state, n) for n in state.plan.nodes)])
    except LabApiError as exc:
        raise KubeLabError(f"seeding the lab's API server: {exc}") from None


def node_identity(state: LabState, node: NodePlan, token: Path, root: Path) -> None:
    """Write the node's ztunnel token (TokenRequest, bound to its pod) and the mesh root (from the ConfigMap that
    control publishes; waits for it), as the DaemonSet's projected volume and ConfigMap mount would hold them."""
    api = LabApi(kubeconfig(state))
    try:
        pod = api.get("v1", "Pod", SYSTEM_NAMESPACE, f"{NODE_ACCOUNT}-{node.name}")
        if pod is None:
            raise KubeLabError(f"the ztunnel pod of node {node.name} is missing from the API server")
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [TOKEN_AUDIENCE],
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod["metadata"]["name"],
                                   "uid": pod["metadata"]["uid"]},
            },
        }  # fmt: skip
        path = f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/serviceaccounts/{NODE_ACCOUNT}/token"
        answer = api.request("POST", path, request)
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(answer["status"]["token"])
        token.chmod(0o600)
        deadline = time.monotonic() + READY_TIMEOUT
        while (cm := api.get("v1", "ConfigMap", SYSTEM_NAMESPACE, ROOT_CONFIGMAP)) is None:
            if time.monotonic() > deadline:
                raise KubeLabError(f"control did not publish ConfigMap {SYSTEM_NAMESPACE}/{ROOT_CONFIGMAP}")
            time.sleep(0.05)
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_text(cm["data"]["root-cert.pem"])
    except LabApiError as exc:
        raise KubeLabError(f"node {node.name}'s identity: {exc}") from None


def enrollment_objects(state: LabState) -> list[dict[str, Any]]:
    """The Namespaces and Pods the API server holds now: what decides which pods are enrolled."""
    api = LabApi(kubeconfig(state))
    try:
        return [*api.list_all("v1", "Namespace"), *api.list_all("v1", "Pod")]
    except LabApiError as exc:
        raise KubeLabError(f"reading the lab's API server: {exc}") from None


def apply_objects(state: LabState, objs: Iterable[dict[str, Any]]) -> None:
    """`lab apply`'s objects into the API server (server-side apply; a pod's status as its kubelet reports it)."""
    api = LabApi(kubeconfig(state))
    try:
        api.apply_all(objs)
    except LabApiError as exc:
        raise KubeLabError(str(exc)) from None


def delete_objects(state: LabState, objs: Iterable[dict[str, Any]]) -> None:
    api = LabApi(kubeconfig(state))
    try:
        for obj in objs:
            api.delete(obj)
    except LabApiError as exc:
        raise KubeLabError(str(exc)) from None
