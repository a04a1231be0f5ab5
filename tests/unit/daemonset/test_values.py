"""`--set key=value`: each value reaches the manifests, and a bad one is refused naming the key and what it
accepts."""

from __future__ import annotations

from typing import Any

import pytest

from daemonset import Values, ValuesError, render


def containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    ]


def test_the_defaults() -> None:
    v = Values()
    assert (v.namespace, v.trust_domain, v.redirect, v.dataplane_label) == (
        "meshlet-system",
        "cluster.local",
        "auto",
        "meshlet.io/dataplane-mode",
    )
    assert v.image.startswith("ghcr.io/meshlet/meshlet:")


def test_each_value_reaches_the_manifests() -> None:
    values = Values().with_sets(
        [
            "namespace=mesh",
            "image=registry.example/meshlet:dev",
            "trustDomain=corp.example",
            "dataplaneLabel=example.com/mesh",
            "resources.ztunnel.limits.memory=2Gi",
            "resources.agent.requests.cpu=10m",
            "control.replicas=2",
        ]
    )
    objects = render(values)
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole")]
    assert all(o["metadata"].get("namespace", "mesh") == "mesh" for o in namespaced)
    assert (objects[0]["kind"], objects[0]["metadata"]["name"]) == ("Namespace", "mesh")
    by_name = {c["name"]: c for c in containers(objects)}
    assert {c["image"] for c in by_name.values()} == {"registry.example/meshlet:dev"}
    assert by_name["ztunnel"]["resources"]["limits"]["memory"] == "2Gi"
    assert by_name["agent"]["resources"]["requests"]["cpu"] == "10m"
    assert "https://meshlet-control.mesh.svc:15012" in by_name["ztunnel"]["args"]
    for name in ("control", "ztunnel"):
        assert "corp.example" in by_name[name]["args"]
    assert "example.com/mesh" in by_name["agent"]["args"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2


def test_istio_compat_reaches_control_and_every_agent_and_control_names_the_install_namespace_root() -> None:
    by_name = {c["name"]: c for c in containers(render(Values().with_sets(["istioCompat=true", "namespace=mesh"])))}
    assert "--istio-compat" in by_name["control"]["args"] and "--istio-compat" in by_name["agent"]["args"]
    args = by_name["control"]["args"]
    assert args[args.index("--root-namespace") + 1] == "mesh"
    plain = {c["name"]: c for c in containers(render(Values()))}
    assert all("--istio-compat" not in c["args"] for c in plain.values())


def test_a_later_set_wins() -> None:
    assert Values().with_sets(["redirect=ebpf", "redirect=iptables"]).redirect == "iptables"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("redirect=bpf", "--set redirect=bpf: expected one of auto, ebpf, iptables"),
        ("redirekt=ebpf", "--set redirekt: unknown key; known keys: namespace, image"),
        ("redirect", "--set 'redirect': expected key=value"),
        ("=x", "expected key=value"),
        ("resources.proxy.limits.cpu=1", "unknown container 'proxy'; expected one of control, agent, ztunnel"),
        ("resources.ztunnel.limit.cpu=1", "expected resources.ztunnel.<requests|limits>.<cpu|memory>"),
        ("resources.ztunnel.limits.memory=1GB", "--set resources.ztunnel.limits.memory=1GB: not a Kubernetes quantity"),
        ("namespace=Mesh_System", "--set namespace=Mesh_System: not a namespace name"),
        ("trustDomain=corp..example", "--set trustDomain=corp..example: not a DNS name"),
        ("dataplaneLabel=a b", "--set dataplaneLabel=a b: not a label key"),
        ("imagePullPolicy=sometimes", "expected one of IfNotPresent, Always, Never"),
        ("control.replicas=0", "--set control.replicas=0: expected a whole number in 1..10"),
        ("istioCompat=yes", "--set istioCompat=yes: expected true or false"),
        ("podsCgroup=/sys/fs/cgroup", "expected a path under the cgroup root"),
        ("image=", "expected an image reference"),
    ],
)
def test_a_bad_set_names_the_key_and_what_it_accepts(item: str, message: str) -> None:
    with pytest.raises(ValuesError) as caught:
        Values().with_sets([item])
    assert message in str(caught.value)
