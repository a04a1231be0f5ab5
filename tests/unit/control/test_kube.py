"""Core kinds convert with the fields the mesh reads; bad fields are named."""

from __future__ import annotations

from typing import Any

import pytest

from control.model.fields import ValidationError
from control.model.kube import Namespace, Pod, Service


def pod(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "mesh", "uid": "u1", "labels": {"app": "web"}},
        "spec": {
            "nodeName": "node1",
            "serviceAccountName": "web",
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    for path, value in over.items():
        cur = obj
        *parents, last = path.split("__")
        for p in parents:
            cur = cur[p]
        cur[last] = value
    return obj


def test_pod_converts() -> None:
    p = Pod.from_k8s(pod())
    assert (p.uid, p.node, p.service_account, p.ips, p.ready) == ("u1", "node1", "web", ("10.0.0.5",), True)
    assert p.labels == (("app", "web"),)
    assert p.container_ports == (("http", 8080),)


def test_pod_without_service_account_runs_as_default_and_gets_a_stable_uid() -> None:
    raw = pod()
    del raw["spec"]["serviceAccountName"], raw["metadata"]["uid"]
    a, b = Pod.from_k8s(raw), Pod.from_k8s(raw)
    assert a.service_account == "default"
    assert a.uid == b.uid and a.uid


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (pod(status__podIP="10.0.0.300"), "status.podIP", "is not an IP address"),
        (pod(spec__nodeName=5), "spec.nodeName", "expected a string"),
        (pod(metadata__labels={"app": 5}), "metadata.labels.app", "label values are strings"),
        (pod(metadata__labels={"bad key!": "x"}), "metadata.labels['bad key!']", "invalid label key"),
        (pod(metadata__name="Web_1"), "metadata.name", "not a valid name"),
        (pod(spec__hostNetwork="yes"), "spec.hostNetwork", "expected true or false"),
    ],
)
def test_bad_pod_fields_are_named(raw: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        Pod.from_k8s(raw)
    assert err.value.field == field
    assert reason in err.value.reason


def test_service_ports_and_named_target() -> None:
    svc = Service.from_k8s(
        {
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "mesh"},
            "spec": {
                "clusterIP": "10.96.0.10",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": "http"}, {"port": 81, "targetPort": 9090, "name": "m"}],
            },
        }
    )
    assert svc.vips == ("10.96.0.10",)
    assert [(p.port, p.target_port) for p in svc.ports] == [(80, "http"), (81, 9090)]


def test_service_port_app_protocol_is_read_and_checked() -> None:
    svc = Service.from_k8s(
        {
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "mesh"},
            "spec": {"ports": [{"port": 80, "appProtocol": "kubernetes.io/h2c"}, {"port": 81, "appProtocol": None}]},
        }
    )
    assert [p.app_protocol for p in svc.ports] == ["kubernetes.io/h2c", ""]
    with pytest.raises(ValidationError, match=r"spec\.ports\[0\]\.appProtocol: expected a string, got 7"):
        Service.from_k8s(
            {
                "kind": "Service",
                "metadata": {"name": "a", "namespace": "b"},
                "spec": {"ports": [{"port": 80, "appProtocol": 7}]},
            }
        )


def test_service_port_of_wrong_type_is_named() -> None:
    with pytest.raises(ValidationError, match=r"spec\.ports\[0\]\.port: expected a port number, got str 'http'"):
        Service.from_k8s(
            {"kind": "Service", "metadata": {"name": "a", "namespace": "b"}, "spec": {"ports": [{"port": "http"}]}}
        )


def test_namespace_ignores_stray_namespace_field() -> None:
    ns = Namespace.from_k8s({"kind": "Namespace", "metadata": {"name": "mesh", "namespace": "x", "labels": {"a": "b"}}})
    assert ns.key.namespace == "" and ns.labels == (("a", "b"),)


def test_empty_service_selector_selects_nothing() -> None:
    svc = Service.from_k8s({"kind": "Service", "metadata": {"name": "a", "namespace": "b"}, "spec": {"selector": {}}})
    assert svc.selector is None
