"""The lab's objects are valid Kubernetes objects (checked against the API schemas, offline)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from meshlet.lab.objects import lab_objects
from meshlet.lab.plan import plan_lab
from meshlet.lab.store import object_filename, write_objects
from meshlet_contracts.mesh_config import DATAPLANE_LABEL

K8S_VERSION = "1.33"


@pytest.mark.parametrize("obj", lab_objects(plan_lab("demo", 0, 2, 2)), ids=lambda o: object_filename(o))
def test_object_validates_against_kubernetes_schema(obj: dict[str, object]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_only_the_mesh_namespace_is_enrolled() -> None:
    objs = lab_objects(plan_lab("demo", 0, 2, 2))
    labels = {o["metadata"]["name"]: o["metadata"]["labels"] for o in objs if o["kind"] == "Namespace"}
    assert labels["mesh"][DATAPLANE_LABEL] == "ambient"
    assert DATAPLANE_LABEL not in labels["plain"]


def test_pods_carry_node_and_ip() -> None:
    plan = plan_lab("demo", 0, 2, 2)
    pods = {o["metadata"]["name"]: o for o in lab_objects(plan) if o["kind"] == "Pod"}
    for p in plan.pods:
        assert pods[p.name]["spec"]["nodeName"] == p.node
        assert pods[p.name]["status"]["podIP"] == p.ip


def test_uids_are_stable_per_lab_and_distinct_across_labs() -> None:
    def uids(lab_id: str) -> list[str]:
        return [o["metadata"]["uid"] for o in lab_objects(plan_lab(lab_id, 0, 2, 2))]

    assert uids("a") == uids("a")
    assert not set(uids("a")) & set(uids("b"))


def test_store_has_one_file_per_object_that_reads_back(tmp_path: Path) -> None:
    objs = lab_objects(plan_lab("demo", 0, 2, 2))
    paths = write_objects(tmp_path / "store", objs)
    assert len(set(paths)) == len(objs)
    assert [yaml.safe_load(p.read_text()) for p in paths] == objs
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]


def test_the_web_services_declare_the_port_protocol_asked_for() -> None:
    """HTTP by name by default (as before); a lab can make its services TCP, or set appProtocol."""

    def ports(**kwargs: str) -> list[dict[str, object]]:
        objs = lab_objects(plan_lab("demo", 0, 1, 2, **kwargs))
        [port] = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "Service"}["mesh"]["spec"]["ports"]
        return [port]

    assert ports() == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
    assert ports(service_port_name="tcp-web") == [
        {"name": "tcp-web", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]
    tagged = ports(service_port_name="web", service_app_protocol="kubernetes.io/h2c")
    assert tagged == [
        {"name": "web", "port": 80, "targetPort": 8080, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}
    ]
    for obj in lab_objects(plan_lab("demo", 0, 1, 2, service_port_name="web", service_app_protocol="tcp")):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
