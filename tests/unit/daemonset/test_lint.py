"""Our lint of the rendered install: the real render passes for every redirect mode and plug-in CA, and each rule
catches the one thing it is about (a finding names the object, the container and the rule)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from daemonset import Values, render
from daemonset.lint import Finding, lint


def rendered(*sets: str) -> list[dict[str, Any]]:
    return render(Values().with_sets(list(sets)))


@pytest.mark.parametrize("sets", [(), ("redirect=iptables",), ("redirect=ebpf",), ("caSecret=cacerts",)])
def test_the_real_render_passes(sets: tuple[str, ...]) -> None:
    assert lint(rendered(*sets)) == []


def pod(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind]
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (c,) = [c for c in pod(objects, kind)["containers"] if c["name"] == name]
    return c


def _no_memory_limit(o: list[dict[str, Any]]) -> None:
    del container(o, "DaemonSet", "agent")["resources"]["limits"]["memory"]


def _no_readiness(o: list[dict[str, Any]]) -> None:
    del container(o, "Deployment", "control")["readinessProbe"]


def _privileged(o: list[dict[str, Any]]) -> None:
    container(o, "DaemonSet", "ztunnel")["securityContext"]["privileged"] = True


def _keeps_capabilities(o: list[dict[str, Any]]) -> None:
    container(o, "DaemonSet", "ztunnel")["securityContext"]["capabilities"]["drop"] = []


def _host_network(o: list[dict[str, Any]]) -> None:
    pod(o, "DaemonSet")["hostNetwork"] = True


def _default_account(o: list[dict[str, Any]]) -> None:
    del pod(o, "Deployment")["serviceAccountName"]


def _latest(o: list[dict[str, Any]]) -> None:
    container(o, "DaemonSet", "agent")["image"] = "ghcr.io/meshlet/meshlet:latest"


def _untagged(o: list[dict[str, Any]]) -> None:
    container(o, "Deployment", "control")["image"] = "registry.local:5000/meshlet"


@pytest.mark.parametrize(
    ("breaks", "expected"),
    [
        (
            _no_memory_limit,
            Finding("DaemonSet/meshlet-system/meshlet-node", "agent", "resources", "no limits for memory"),
        ),
        (_no_readiness, Finding("Deployment/meshlet-system/meshlet-control", "control", "probes", "no readinessProbe")),
        (_privileged, Finding("DaemonSet/meshlet-system/meshlet-node", "ztunnel", "privileged", "")),
        (_keeps_capabilities, Finding("DaemonSet/meshlet-system/meshlet-node", "ztunnel", "capabilities", "")),
        (_host_network, Finding("DaemonSet/meshlet-system/meshlet-node", "ztunnel", "host-network", "")),
        (_default_account, Finding("Deployment/meshlet-system/meshlet-control", "", "service-account", "")),
        (_latest, Finding("DaemonSet/meshlet-system/meshlet-node", "agent", "image-tag", "")),
        (_untagged, Finding("Deployment/meshlet-system/meshlet-control", "control", "image-tag", "")),
    ],
)
def test_each_rule_catches_its_case(breaks: Callable[[list[dict[str, Any]]], None], expected: Finding) -> None:
    objects = rendered()
    breaks(objects)
    (found,) = lint(objects)
    assert (found.obj, found.container, found.rule) == (expected.obj, expected.container, expected.rule)
    if expected.message:
        assert found.message == expected.message
    assert str(found).startswith(
        f"{expected.obj} container {expected.container}: [{expected.rule}]"
        if expected.container
        else f"{expected.obj}: [{expected.rule}]"
    )


def test_an_exec_probe_counts_and_a_digest_pins_an_image() -> None:
    objects = rendered()
    c = container(objects, "Deployment", "control")
    c["readinessProbe"] = {"exec": {"command": ["true"]}}
    c["image"] = "ghcr.io/meshlet/meshlet@sha256:" + "0" * 64
    assert lint(objects) == []
