"""The rendered install passes Kubernetes' own schemas (offline, kubernetes-validate, strict: an unknown field is an
error) for the pinned versions, what the components need on Kubernetes (the API source, ztunnel's token and
mesh root, control's CA), least-privilege RBAC, and container arguments today's components really take. Our
own lint of the render is pinned in test_lint.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

import agent.main
import control.main
import ztunnel.main
from daemonset import Values, render
from daemonset.node import ROOT_CERT_PATH, TOKEN_AUDIENCE, TOKEN_PATH

KUBERNETES_VERSIONS = ("1.29.0", "1.31.0")
"""The oldest and newest minor versions the install is checked against (kubernetes-validate ships both)."""
REDIRECTS = ("auto", "ebpf", "iptables")


def objects(redirect: str = "auto") -> list[dict[str, Any]]:
    return render(Values().with_sets([f"redirect={redirect}"]))


def of_kind(kind: str, redirect: str = "auto") -> list[dict[str, Any]]:
    return [o for o in objects(redirect) if o["kind"] == kind]


def daemonset(redirect: str = "auto") -> dict[str, Any]:
    (ds,) = of_kind("DaemonSet", redirect)
    return ds


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects():
        if obj["kind"] in ("Deployment", "DaemonSet"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for owner, spec in pod_specs():
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield f"{owner}/{c['name']}", c


def container(name: str, redirect: str = "auto") -> dict[str, Any]:
    (found,) = [c for c in daemonset(redirect)["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}", item
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("redirect", REDIRECTS)
def test_every_object_is_valid_for_each_pinned_kubernetes_version(version: str, redirect: str) -> None:
    rendered = objects(redirect)
    assert {o["kind"] for o in rendered} >= {"CustomResourceDefinition", "DaemonSet", "Deployment", "ClusterRole"}
    for obj in rendered:
        try:
            checked = kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} invalid for Kubernetes {version}: {exc}")
        assert checked == version.rpartition(".")[0]  # the pinned version's own schema, not an older fallback


def test_an_invalid_manifest_is_caught_so_the_check_above_means_something() -> None:
    ds = daemonset()
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["addd"] = ["NET_ADMIN"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES_VERSIONS[0], strict=True)


def test_every_container_has_cpu_and_memory_requests_and_limits() -> None:
    for name, c in containers():
        for kind in ("requests", "limits"):
            assert set(c["resources"].get(kind, {})) == {"cpu", "memory"}, f"{name}: {kind}"


def test_nothing_is_privileged_and_every_container_drops_all_capabilities_before_adding() -> None:
    for path, value in walk(objects()):
        assert not (path.endswith(".privileged") and value is True), path
    for name, c in containers():
        caps = c["securityContext"]["capabilities"]
        assert caps["drop"] == ["ALL"], name
        # Kubernetes refuses allowPrivilegeEscalation: false next to SYS_ADMIN (or privileged).
        if "SYS_ADMIN" in caps.get("add", []):
            assert "allowPrivilegeEscalation" not in c["securityContext"], name


def test_each_node_container_gets_the_capabilities_its_code_uses_and_no_more() -> None:
    adds = {c["name"]: set(c["securityContext"]["capabilities"]["add"]) for c in container_list()}
    assert adds["ztunnel"] == {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
    assert adds["agent"] == {"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "BPF", "PERFMON", "SYS_RESOURCE"}
    (control,) = of_kind("Deployment")
    assert "add" not in control["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]


def container_list() -> list[dict[str, Any]]:
    return list(daemonset()["spec"]["template"]["spec"]["containers"])


def test_the_node_pod_never_uses_the_host_network_and_ztunnel_mounts_nothing_of_the_host_namespaces() -> None:
    spec = daemonset()["spec"]["template"]["spec"]
    assert spec.get("hostNetwork", False) is False  # ztunnel shares the pod: it enters pods' netns by fd
    assert spec["hostPID"] is True  # the agent's netns discovery reads /proc/PID/ns/net
    mounts = {m["mountPath"] for m in container("ztunnel")["volumeMounts"]}
    assert not mounts & {"/proc", "/var/run/netns", "/host/sys/fs/cgroup"}


def test_the_agent_sees_the_hosts_bpf_cgroup_and_netns_directories() -> None:
    mounts = {m["mountPath"]: m for m in container("agent")["volumeMounts"]}
    assert mounts["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "HostToContainer"
    volumes = {v["name"]: v for v in daemonset()["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/host/sys/fs/cgroup"]["name"]]["hostPath"]["path"] == "/sys/fs/cgroup"
    # The ZDS socket directory is shared by both containers.
    assert {m["name"] for m in container("ztunnel")["volumeMounts"] if m["mountPath"] == "/var/run/meshlet"} == {
        mounts["/var/run/meshlet"]["name"]
    }


def test_ztunnel_is_probed_on_15021_and_the_agent_through_its_status_socket() -> None:
    z = container("ztunnel")
    assert z["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    assert "httpGet" in z["livenessProbe"]
    a = container("agent")
    assert "/var/run/meshlet/agent.sock" in a["readinessProbe"]["exec"]["command"][-1]
    assert a["livenessProbe"]["exec"] == a["readinessProbe"]["exec"]


def test_the_daemonset_runs_on_every_node_critical_and_one_node_at_a_time() -> None:
    ds = daemonset()
    spec = ds["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}


def test_ztunnel_gets_a_short_lived_projected_token_for_meshlet() -> None:
    (token,) = [v for v in daemonset()["spec"]["template"]["spec"]["volumes"] if "projected" in v]
    (source,) = token["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == TOKEN_AUDIENCE == "meshlet"
    assert source["serviceAccountToken"]["expirationSeconds"] == 3600
    assert token["name"] in {m["name"] for m in container("ztunnel")["volumeMounts"]}
    assert token["name"] not in {m["name"] for m in container("agent")["volumeMounts"]}


def test_ztunnel_proves_its_node_with_the_token_and_trusts_the_root_control_publishes() -> None:
    z = container("ztunnel")
    args = z["args"]
    assert args[args.index("--token") + 1] == TOKEN_PATH
    assert args[args.index("--root-cert") + 1] == ROOT_CERT_PATH == "/var/run/meshlet-root/root-cert.pem"
    assert "--credentials" not in args
    volumes = {v["name"]: v for v in daemonset()["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in z["volumeMounts"] if ROOT_CERT_PATH.startswith(m["mountPath"] + "/")]
    assert volumes[mount["name"]]["configMap"] == {"name": "meshlet-root-cert"}  # not optional: wait for control
    host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    assert host_paths == {"/sys/fs/bpf", "/sys/fs/cgroup", "/var/run/netns", "/lib/modules"}  # no credentials


def test_control_and_the_agent_read_the_api_server_not_a_store() -> None:
    (deployment,) = of_kind("Deployment")
    control_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert control_args[control_args.index("--source") + 1] == "kubernetes"
    agent_args = container("agent")["args"]
    assert agent_args[agent_args.index("--source") + 1] == "kubernetes"
    for args in (control_args, agent_args):
        assert "--store" not in args
    for _, spec in pod_specs():
        assert "store" not in {v["name"] for v in spec["volumes"]}


def test_control_keeps_its_ca_in_an_emptydir_unless_a_plugin_ca_secret_is_given() -> None:
    (deployment,) = of_kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "state", "emptyDir": {}}]
    assert "--ca-cert" not in spec["containers"][0]["args"]
    (plugged,) = [o for o in render(Values().with_sets(["caSecret=cacerts"])) if o["kind"] == "Deployment"]
    spec = plugged["spec"]["template"]["spec"]
    (ca,) = [v for v in spec["volumes"] if v["name"] == "ca"]
    assert ca["secret"]["secretName"] == "cacerts"
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "ca"]
    args = spec["containers"][0]["args"]
    assert args[args.index("--ca-cert") + 1] == f"{mount['mountPath']}/ca-cert.pem"
    assert args[args.index("--ca-key") + 1] == f"{mount['mountPath']}/ca-key.pem"
    c = control.main.parser().parse_args(args)
    assert str(c.ca_cert).endswith("ca-cert.pem") and str(c.ca_key).endswith("ca-key.pem")
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(plugged, version, strict=True)


def expand(args: list[str]) -> list[str]:
    return [a.replace("$(NODE_NAME)", "node-1").replace("$(HOST_IP)", "10.0.0.5") for a in args]


@pytest.mark.parametrize("redirect", REDIRECTS)
def test_each_container_passes_only_arguments_its_component_takes_today(redirect: str) -> None:
    a = agent.main.parser().parse_args(expand(container("agent", redirect)["args"]))
    assert (a.node, a.probe_ip, a.redirect) == ("node-1", "10.0.0.5", redirect)
    assert (a.pods_cgroup is None) == (redirect == "iptables")
    z = ztunnel.main.parser().parse_args(expand(container("ztunnel", redirect)["args"]))
    assert z.control == "https://meshlet-control.meshlet-system.svc:15012"
    assert z.readiness == ("0.0.0.0", 15021)
    assert str(z.zds_socket) == str(a.zds_socket)
    assert (z.bpf_dir is None) == (redirect == "iptables")
    if z.bpf_dir is not None:
        assert z.bpf_dir == a.bpf_dir
    assert str(z.token) == TOKEN_PATH and str(z.root_cert) == ROOT_CERT_PATH
    assert a.source == "kubernetes"
    (deployment,) = of_kind("Deployment", redirect)
    c = control.main.parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert (c.listen, c.metrics) == (("0.0.0.0", 15012), ("0.0.0.0", 15014))
    assert c.source == "kubernetes"


def test_the_service_exposes_the_config_and_monitoring_ports() -> None:
    (service,) = of_kind("Service")
    assert {p["port"] for p in service["spec"]["ports"]} == {15012, 15014}
    (budget,) = of_kind("PodDisruptionBudget")
    (deployment,) = of_kind("Deployment")
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def rules(name: str) -> list[dict[str, Any]]:
    (role,) = [r for r in of_kind("ClusterRole") if r["metadata"]["name"] == name]
    return list(role["rules"])


def verbs(name: str, group: str, resource: str) -> set[str]:
    return {v for r in rules(name) if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


def test_rbac_grants_no_wildcards_and_only_the_verbs_each_component_needs() -> None:
    for name in ("meshlet-control", "meshlet-node"):
        for rule in rules(name):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    assert verbs("meshlet-node", "", "pods") == {"get", "list", "watch", "patch"}
    assert verbs("meshlet-node", "", "namespaces") == {"get", "list", "watch"}
    assert verbs("meshlet-node", "", "secrets") == set()
    assert verbs("meshlet-control", "gateway.networking.k8s.io", "httproutes") == {"list", "watch"}
    assert verbs("meshlet-control", "gateway.networking.k8s.io", "httproutes/status") == {"update", "patch"}
    assert verbs("meshlet-control", "", "pods") == {"list", "watch", "get"}  # get: the pod a token is bound to
    assert verbs("meshlet-control", "", "nodes") == {"list", "watch"}
    assert verbs("meshlet-control", "", "configmaps") == set()  # not cluster-wide: see the Role below
    assert verbs("meshlet-control", "authentication.k8s.io", "tokenreviews") == {"create"}
    assert verbs("meshlet-control", "", "events") == {"create"}
    for group, resource in (("", "services"), ("discovery.k8s.io", "endpointslices"), ("", "serviceaccounts")):
        assert verbs("meshlet-control", group, resource) == {"list", "watch"}
    assert verbs("meshlet-control", "", "secrets") == set()
    bindings = {b["metadata"]["name"]: b for b in of_kind("ClusterRoleBinding")}
    for name, binding in bindings.items():
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "meshlet-system"}]


def test_control_may_write_only_the_root_cert_configmap_and_only_in_its_namespace() -> None:
    (role,) = of_kind("Role")
    (binding,) = of_kind("RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "meshlet-system"
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "meshlet-control"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "meshlet-control", "namespace": "meshlet-system"}]
    named, create, ca, ca_create = role["rules"]
    assert (named["resources"], named["resourceNames"]) == (["configmaps"], ["meshlet-root-cert"])
    assert set(named["verbs"]) == {"get", "update", "patch"}
    # `create` cannot name its object (it does not exist yet): it is the one verb not limited to the name.
    assert (create["resources"], create["verbs"], "resourceNames" in create) == (["configmaps"], ["create"], False)
    # The root CA's Secret: read by name, created once, never updated (a root is rotated by a person).
    assert (ca["resources"], ca["resourceNames"], ca["verbs"]) == (["secrets"], ["meshlet-ca"], ["get"])
    assert (ca_create["resources"], ca_create["verbs"]) == (["secrets"], ["create"])
    assert "resourceNames" not in ca_create
