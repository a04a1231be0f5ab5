"""`meshlet check --pre-install`: can this cluster run meshlet? (like `istioctl x precheck`).

Read-only checks through the API server, each a pass, a warning (works, with a caveat) or a failure (the install
would not work):
- the server version: 1.29 or newer (the oldest version the manifests are validated against);
- every node's kernel (node.status.nodeInfo.kernelVersion): the eBPF redirection loads cgroup/connect4 programs
  that call bpf_get_netns_cookie (Linux 5.7) and relies on CAP_BPF (5.8), so it needs 5.8; below that
  `redirect=auto` falls back to iptables (a warning) and `redirect=ebpf` cannot work (a failure). Kernels older
  than 4.19 are not supported at all. The container runtime is reported;
- the CNI, recognised from its DaemonSet in kube-system. Cilium with its socket load balancer in pods'
  namespaces (kube-proxy replacement without `bpf-lb-sock-hostns-only: "true"`) rewrites a Service VIP to a
  pod address inside connect(), before meshlet's redirection sees it: Cilium's Istio guide asks for
  `socketLB.hostNamespaceOnly=true`, and so does meshlet;
- the Gateway API HTTPRoute CRD (a warning: meshlet works without routes);
- the permissions the install needs (SelfSubjectAccessReview; skipped with a note where the server has none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshlet.cli.cluster import HTTPROUTE_CRD
from meshlet.cli.kubecli import read, typed_api

Level = Literal["pass", "warn", "fail"]
MIN_SERVER = (1, 29)
MIN_KERNEL = (4, 19)
EBPF_KERNEL = (5, 8)
CNIS = {
    "cilium": "Cilium",
    "calico-node": "Calico",
    "kube-flannel-ds": "Flannel",
    "flannel": "Flannel",
    "kindnet": "kindnet",
    "weave-net": "Weave Net",
    "aws-node": "Amazon VPC CNI",
    "antrea-agent": "Antrea",
    "kube-router": "kube-router",
}
NEEDED = [  # (verb, group, resource) of what `meshlet install` applies
    ("create", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("create", "", "namespaces"),
    ("create", "rbac.authorization.k8s.io", "clusterroles"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    ("create", "apps", "daemonsets"),
    ("create", "apps", "deployments"),
]


@dataclass(frozen=True, slots=True)
class Result:
    group: str
    name: str
    level: Level
    detail: str
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "name": self.name, "level": self.level, "detail": self.detail, "hint": self.hint}


def _version(text: str) -> tuple[int, int] | None:
    m = re.match(r"v?(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def server_version(api: Any) -> Result:
    info = read(typed_api(client.VersionApi, api).get_code)
    major, git_version = str(info.get("major", "")), str(info.get("gitVersion", ""))
    minor = re.match(r"\d+", str(info.get("minor", "")))  # "31+" on some managed clusters
    found = (int(major), int(minor.group())) if minor and major.isdigit() else None
    if found is None:
        return Result("cluster", "Kubernetes version", "warn", f"cannot read {git_version!r}")
    ok = found >= MIN_SERVER
    return Result(
        "cluster",
        "Kubernetes version",
        "pass" if ok else "fail",
        git_version,
        "" if ok else f"meshlet supports Kubernetes {MIN_SERVER[0]}.{MIN_SERVER[1]} and newer",
    )


def nodes(api: Any, redirect: str) -> list[Result]:
    out = []
    items = read(typed_api(client.CoreV1Api, api).list_node)["items"]
    if not items:
        return [Result("nodes", "nodes", "fail", "the cluster has no nodes", "meshlet runs one pod per node")]
    for node in items:
        info = (node.get("status") or {}).get("nodeInfo") or {}
        kernel = str(info.get("kernelVersion", ""))
        runtime = info.get("containerRuntimeVersion") or "unknown"
        found = _version(kernel)
        name = f"node {node['metadata']['name']}"
        detail = f"kernel {kernel or 'unknown'}, runtime {runtime}"
        if found is None:
            out.append(Result("nodes", name, "warn", detail, "the kernel version is not reported"))
        elif found < MIN_KERNEL:
            out.append(Result("nodes", name, "fail", detail, "meshlet needs Linux 4.19 or newer"))
        elif found < EBPF_KERNEL and redirect == "ebpf":
            out.append(
                Result(
                    "nodes",
                    name,
                    "fail",
                    detail,
                    "redirect=ebpf needs Linux 5.8 (bpf_get_netns_cookie in cgroup/connect4, CAP_BPF)",
                )
            )
        elif found < EBPF_KERNEL:
            out.append(
                Result(
                    "nodes",
                    name,
                    "warn",
                    detail,
                    "below Linux 5.8 the eBPF redirection cannot load: this node uses iptables",
                )
            )
        else:
            out.append(Result("nodes", name, "pass", detail))
    return out


def cni(api: Any) -> list[Result]:
    daemonsets = read(typed_api(client.AppsV1Api, api).list_namespaced_daemon_set, "kube-system")["items"]
    names = [d["metadata"]["name"] for d in daemonsets]
    found = [(name, CNIS[name]) for name in names if name in CNIS]
    if not found:
        return [
            Result(
                "cni",
                "CNI",
                "warn",
                "no known CNI DaemonSet in kube-system",
                "meshlet works with any CNI that puts pods in their own network namespace",
            )
        ]
    out = [Result("cni", "CNI", "pass", ", ".join(sorted({label for _, label in found})))]
    if any(name == "cilium" for name, _ in found):
        out.append(_cilium(api))
    return out


def _cilium(api: Any) -> Result:
    try:
        core = typed_api(client.CoreV1Api, api)
        data = read(core.read_namespaced_config_map, "cilium-config", "kube-system").get("data") or {}
    except ApiException as exc:
        if exc.status != 404:
            raise
        return Result(
            "cni",
            "Cilium socket LB",
            "warn",
            "no kube-system/cilium-config to read",
            'make sure Cilium runs with bpf-lb-sock-hostns-only: "true"',
        )
    replacement = str(data.get("kube-proxy-replacement", "false")).lower() in ("true", "strict", "partial")
    socket_lb = replacement or str(data.get("bpf-lb-sock", "false")).lower() == "true"
    host_only = str(data.get("bpf-lb-sock-hostns-only", "false")).lower() == "true"
    if socket_lb and not host_only:
        return Result(
            "cni",
            "Cilium socket LB",
            "warn",
            "Cilium's socket load balancer runs in pods' namespaces: Service VIPs are rewritten in "
            "connect() before meshlet redirects them",
            'set bpf-lb-sock-hostns-only: "true" (Helm socketLB.hostNamespaceOnly=true)',
        )
    return Result("cni", "Cilium socket LB", "pass", "host namespace only" if socket_lb else "off")


def gateway_api(api: Any) -> Result:
    try:
        read(typed_api(client.ApiextensionsV1Api, api).read_custom_resource_definition, HTTPROUTE_CRD)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return Result(
            "cluster",
            "Gateway API",
            "warn",
            f"{HTTPROUTE_CRD} is not installed",
            "install the Gateway API CRDs to use HTTPRoutes",
        )
    return Result("cluster", "Gateway API", "pass", f"{HTTPROUTE_CRD} installed")


def permissions(api: Any) -> list[Result]:
    authz = typed_api(client.AuthorizationV1Api, api)
    out = []
    for verb, group, resource in NEEDED:
        attrs = client.V1ResourceAttributes(verb=verb, group=group, resource=resource)
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
        try:
            allowed = bool(authz.create_self_subject_access_review(review).status.allowed)
        except ApiException as exc:
            if exc.status in (404, 405):
                return [
                    Result(
                        "permissions", "permissions", "warn", "skipped: the server has no SelfSubjectAccessReview", ""
                    )
                ]
            raise
        what = f"{verb} {resource}" + (f".{group}" if group else "")
        hint = "" if allowed else "install as a cluster admin (the install creates cluster-wide RBAC and CRDs)"
        out.append(Result("permissions", what, "pass" if allowed else "fail", "allowed" if allowed else "denied", hint))
    return out


def run(api: Any, redirect: str = "auto") -> list[Result]:
    return [server_version(api), *nodes(api, redirect), *cni(api), gateway_api(api), *permissions(api)]
