"""The node DaemonSet: one pod per node with the agent (redirection, ZDS) and ztunnel (the node proxy).

What each container may do is what its code does, granted as capabilities (every other one dropped), never
`privileged`:

- agent: finds pod network namespaces under /var/run/netns and in every process's /proc/PID/ns/net (so the pod
  shares the host's PID namespace, and opening another process's ns file needs SYS_PTRACE); enters them with
  nsenter/setns (SYS_ADMIN) to install iptables rules, policy routes, tc filters and a sysctl (NET_ADMIN; legacy
  iptables opens a raw socket: NET_RAW); loads, pins and attaches the eBPF programs with bcc (BPF, PERFMON for
  the tracing helpers bcc programs use, SYS_RESOURCE to lift RLIMIT_MEMLOCK on kernels before 5.11). It does
  all of that inside pods' namespaces or through fds, never in the host's network namespace: no hostNetwork.
- ztunnel: receives each pod's netns fd from the agent over ZDS and enters it with setns to open its listeners
  there (SYS_ADMIN; it also covers bpf() on the pinned orig_dst map), opens connections to apps from the
  caller's address with IP_TRANSPARENT and marks sockets with SO_MARK (NET_ADMIN, NET_RAW). Its ports (15001,
  15006, 15008, 15020, 15021) are all above 1024, so it needs no NET_BIND_SERVICE. It never touches the host's
  network namespace: no hostNetwork, no hostPID, no /proc or /var/run/netns mount. It proves its node to
  control with a projected ServiceAccount token (audience `meshlet`, rotated by the kubelet and re-read from
  disk) and verifies control with the mesh root control publishes in the ConfigMap `meshlet-root-cert` (the
  pod waits for that ConfigMap, so the nodes start once control has published it).

Both containers read the API server as the node's ServiceAccount (`--source kubernetes`): the agent watches its
node's pods and the namespaces and annotates the pods it redirects.

Both run as root (the capabilities are a root process's, bounded); `allowPrivilegeEscalation: false` is left
out because Kubernetes refuses it next to SYS_ADMIN.
"""

from __future__ import annotations

from typing import Any

from daemonset.control import CONFIG_PORT
from daemonset.rbac import CONTROL, NODE, ROOT_CERT_CONFIGMAP, labels
from daemonset.values import Values
from meshlet_contracts import ports
from meshlet_contracts.bpf_maps import PIN_ROOT

RUN_DIR = "/var/run/meshlet"
ZDS_SOCKET = f"{RUN_DIR}/ztunnel.sock"
STATUS_SOCKET = f"{RUN_DIR}/agent.sock"
HOST_CGROUP = "/host/sys/fs/cgroup"
"""The host's cgroup v2 root, mounted beside the container's own (its cgroup namespace) rather than over it."""
BPF_DIR = str(PIN_ROOT / "node")
TOKEN_DIR = "/var/run/secrets/meshlet"
TOKEN_PATH = f"{TOKEN_DIR}/token"
ROOT_CERT_DIR = "/var/run/meshlet-root"
ROOT_CERT_PATH = f"{ROOT_CERT_DIR}/root-cert.pem"
TOKEN_AUDIENCE = "meshlet"
TOKEN_SECONDS = 3600
STATUS_PROBE = (
    f"from pathlib import Path; from agent.status import read_status; read_status(Path({STATUS_SOCKET!r}), timeout=3.0)"
)
"""The agent serves its status only on a unix socket (no HTTP port): the probe asks it there, and fails (a
traceback, exit 1) when the socket is missing or the answer is not 200."""

NODE_ENV = [
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
    {"name": "PYTHONUNBUFFERED", "value": "1"},
]


def _capabilities(*add: str) -> dict[str, Any]:
    return {"privileged": False, "runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": list(add)}}


def agent_args(values: Values) -> list[str]:
    args = [
        "--node", "$(NODE_NAME)",
        "--source", "kubernetes",
        "--zds-socket", ZDS_SOCKET,
        "--status-socket", STATUS_SOCKET,
        "--redirect", values.redirect,
        "--bpf-dir", BPF_DIR,
        "--probe-ip", "$(HOST_IP)",
        "--dataplane-label", values.dataplane_label,
    ]  # fmt: skip
    if values.istio_compat:  # as control's: the two must agree on which pods are enrolled
        args.append("--istio-compat")
    if values.redirect != "iptables":
        args += ["--pods-cgroup", f"{HOST_CGROUP}/{values.pods_cgroup}"]
    return args


def ztunnel_args(values: Values) -> list[str]:
    args = [
        "--node", "$(NODE_NAME)",
        "--control", f"https://{CONTROL}.{values.namespace}.svc:{CONFIG_PORT}",
        "--token", TOKEN_PATH,
        "--root-cert", ROOT_CERT_PATH,
        "--zds-socket", ZDS_SOCKET,
        "--trust-domain", values.trust_domain,
        "--root-namespace", values.namespace,  # until control names the root namespaces (controls before 11-29)
        "--metrics", f"0.0.0.0:{ports.METRICS}",
        "--readiness", f"0.0.0.0:{ports.READINESS}",
        "--config-cache", "/var/lib/meshlet/ztunnel/config.json",
    ]  # fmt: skip
    if values.redirect != "iptables":
        args += ["--bpf-dir", BPF_DIR]  # the original destinations of eBPF-redirected connections
    return args


def _agent(values: Values) -> dict[str, Any]:
    probe = {"exec": {"command": ["python", "-c", STATUS_PROBE]}, "timeoutSeconds": 5}
    return {
        "name": "agent",
        "image": values.image,
        "imagePullPolicy": values.image_pull_policy,
        "command": ["python", "-m", "agent"],
        "args": agent_args(values),
        "env": NODE_ENV,
        "readinessProbe": {**probe, "periodSeconds": 10},
        "livenessProbe": {**probe, "initialDelaySeconds": 30, "periodSeconds": 20, "failureThreshold": 3},
        "resources": values.resources["agent"].to_k8s(),
        "securityContext": {
            **_capabilities("NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "BPF", "PERFMON", "SYS_RESOURCE"),
            # bcc's bpf() and perf_event_open() calls: runtimes' default profiles that predate CAP_BPF refuse them.
            "seccompProfile": {"type": "Unconfined"},
        },
        "volumeMounts": [
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"},
            {"name": "cgroup", "mountPath": HOST_CGROUP, "readOnly": True},
            # Network namespaces CNIs create after the agent started must appear inside it too.
            {"name": "netns", "mountPath": "/var/run/netns", "mountPropagation": "HostToContainer", "readOnly": True},
            # bcc compiles the programs against the running kernel's headers.
            {"name": "modules", "mountPath": "/lib/modules", "readOnly": True},
        ],
    }


def _ztunnel(values: Values) -> dict[str, Any]:
    return {
        "name": "ztunnel",
        "image": values.image,
        "imagePullPolicy": values.image_pull_policy,
        "command": ["python", "-m", "ztunnel"],
        "args": ztunnel_args(values),
        "env": NODE_ENV,
        "ports": [
            {"name": "http-metrics", "containerPort": ports.METRICS, "protocol": "TCP"},
            {"name": "http-ready", "containerPort": ports.READINESS, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": ports.READINESS}, "periodSeconds": 5},
        # Not /healthz/ready: a ztunnel waiting for control is alive, and restarting it would not help. The
        # metrics endpoint answers as long as its event loop runs.
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": ports.METRICS},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": values.resources["ztunnel"].to_k8s(),
        "securityContext": {
            **_capabilities("NET_ADMIN", "NET_RAW", "SYS_ADMIN"),
            "readOnlyRootFilesystem": True,
            # The default profile allows setns() and bpf() to a process holding SYS_ADMIN.
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "ztunnel-cache", "mountPath": "/var/lib/meshlet/ztunnel"},
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "root-cert", "mountPath": ROOT_CERT_DIR, "readOnly": True},
            # Not read-only: BPF_OBJ_GET of the pinned orig_dst map asks for read-write access to the pin.
            {"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"},
        ],
    }


def _host(name: str, path: str, kind: str = "Directory") -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def node(values: Values) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NODE, "namespace": values.namespace, "labels": labels(NODE)},
        "spec": {
            "selector": {"matchLabels": labels(NODE)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": labels(NODE),
                    # The runtime's default AppArmor profile forbids writing /proc/sys, which the eBPF backend's
                    # `sysctl net.ipv4.tcp_fwmark_accept=1` in a pod's netns does.
                    "annotations": {"container.apparmor.security.beta.kubernetes.io/agent": "unconfined"},
                },
                "spec": {
                    "serviceAccountName": NODE,
                    "priorityClassName": "system-node-critical",
                    "hostPID": True,  # for the agent's netns discovery through /proc (see the module's docstring)
                    "hostNetwork": False,
                    # Every node, whatever its taints: a node without it would leave its enrolled pods unserved.
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 30,  # ztunnel's --drain-timeout (10 s) fits within it
                    "containers": [_agent(values), _ztunnel(values)],
                    "volumes": [
                        # ZDS and the agent's status socket: shared by the two containers of this pod only.
                        {"name": "run", "emptyDir": {}},
                        {"name": "ztunnel-cache", "emptyDir": {}},
                        _host("bpffs", "/sys/fs/bpf"),
                        _host("cgroup", "/sys/fs/cgroup"),
                        _host("netns", "/var/run/netns", "DirectoryOrCreate"),
                        _host("modules", "/lib/modules"),
                        {"name": "root-cert", "configMap": {"name": ROOT_CERT_CONFIGMAP}},
                        {
                            "name": "token",
                            "projected": {
                                "sources": [
                                    {
                                        "serviceAccountToken": {
                                            "audience": TOKEN_AUDIENCE,
                                            "expirationSeconds": TOKEN_SECONDS,
                                            "path": "token",
                                        }
                                    }
                                ]
                            },
                        },
                    ],
                },
            },
        },
    }
