"""The node proxy's TrafficPolicies: converted once per config version, one per target Service (and port), the
oldest winning a tie, and an item that cannot be converted rejecting the version naming it."""

from __future__ import annotations

from typing import Any

import pytest

from control.model.traffic import TrafficPolicy as ControlPolicy
from meshlet_contracts.config_items import TrafficPolicyItem
from ztunnel.config.state import ConfigRejected, ConfigState, apply
from ztunnel.state.mesh import MeshIndex


def item(name: str, service: str = "web", port: int | None = None, created: str = "", **spec: Any) -> TrafficPolicyItem:
    target: dict[str, Any] = {"name": service} if port is None else {"name": service, "port": port}
    meta = {"name": name, "namespace": "shop", "creationTimestamp": created}
    obj = {"apiVersion": "networking.meshlet.io/v1", "kind": "TrafficPolicy", "metadata": meta}
    return ControlPolicy.from_k8s({**obj, "spec": {"targetRef": target, **spec}}).to_wire()


def index(*items: TrafficPolicyItem) -> MeshIndex:
    message = {"type": "snapshot", "epoch": "e", "version": 3, "resources": {"traffic_policies": list(items)}}
    return MeshIndex.from_config(apply(ConfigState(), message, MeshIndex.from_config))


def test_a_policy_applies_to_every_port_of_its_service_and_no_other_service() -> None:
    idx = index(item("p", loadBalancer={"simple": "RANDOM"}))
    found = idx.traffic_policy("shop/web", 80)
    assert found is not None and found.name == "p" and found.load_balancer is not None
    assert found.load_balancer.simple == "RANDOM"
    assert idx.traffic_policy("shop/web", 9090) is found
    assert idx.traffic_policy("shop/api", 80) is None
    assert idx.traffic_policy("other/web", 80) is None


def test_a_policy_for_a_port_wins_over_one_for_the_whole_service_on_that_port_only() -> None:
    idx = index(item("whole"), item("port80", port=80))
    assert idx.traffic_policy("shop/web", 80).name == "port80"  # type: ignore[union-attr]
    assert idx.traffic_policy("shop/web", 81).name == "whole"  # type: ignore[union-attr]


def test_of_two_policies_for_one_target_the_oldest_wins_whatever_the_names() -> None:
    idx = index(item("a-new", created="2026-05-01T00:00:00Z"), item("z-old", created="2026-01-01T00:00:00Z"))
    assert idx.traffic_policy("shop/web", 80).name == "z-old"  # type: ignore[union-attr]


def test_without_creation_times_the_first_by_name_wins() -> None:
    idx = index(item("b"), item("a"))
    assert idx.traffic_policy("shop/web", 80).name == "a"  # type: ignore[union-attr]


def test_an_item_that_cannot_be_converted_rejects_the_version_naming_it() -> None:
    bad = dict(item("p", outlierDetection={}))
    bad["outlierDetection"] = {**bad["outlierDetection"], "interval": "soon"}
    with pytest.raises(ConfigRejected) as info:
        index(bad)  # type: ignore[arg-type]
    assert str(info.value).startswith(
        "traffic_policies/shop/p: TrafficPolicy shop/p: outlierDetection.interval: 'soon' is not a duration"
    )


def test_an_index_without_policies_has_none() -> None:
    assert index().traffic_policy("shop/web", 80) is None
    assert MeshIndex().traffic_policy("shop/web", 80) is None
