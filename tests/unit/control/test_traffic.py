"""TrafficPolicy in control: a valid object reaches the config stream, a bad one is reported naming file, object and
field while its last good version stays, and of two policies for one target the older is in force."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from control.model.fields import ValidationError
from control.model.mesh import MeshSettings
from control.model.traffic import TrafficPolicy, conflicts
from control.sources.base import SourceBatch
from control.store import ConfigStore
from meshlet_contracts.traffic import LoadBalancer, OutlierDetection, RateLimit, TargetRef


def policy(name: str = "web", created: str = "", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop"}
    if created:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "networking.meshlet.io/v1",
        "kind": "TrafficPolicy",
        "metadata": meta,
        "spec": {"targetRef": {"kind": "Service", "name": "web"}, **spec},
    }


def error(obj: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        TrafficPolicy.from_k8s(obj)
    return str(info.value)


def test_a_full_policy_converts() -> None:
    converted = TrafficPolicy.from_k8s(
        policy(
            loadBalancer={"simple": "LEAST_REQUEST"},
            connectionPool={"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}},
            outlierDetection={"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "15s"},
            rateLimit={"requestsPerUnit": 10, "burst": 10},
        )
    )
    assert converted.target == TargetRef("web")
    assert converted.load_balancer == LoadBalancer(simple="LEAST_REQUEST")
    assert converted.connection_pool is not None and converted.connection_pool.max_connections == 1
    assert converted.outlier_detection == OutlierDetection(3, 0, 1.0, 15.0, 10)
    assert converted.rate_limit == RateLimit(10, "second", 10)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"outlierDetection": {"baseEjectionTime": "10x"}},
            "spec.outlierDetection.baseEjectionTime: '10x' is not a duration",
        ),
        ({"outlierDetection": {"maxEjectionPercnt": 5}}, "spec.outlierDetection.maxEjectionPercnt: unknown field; did"),
        ({"outlierDetection": {"maxEjectionPercent": 101}}, "spec.outlierDetection.maxEjectionPercent: 101 is out"),
        ({"loadBalancer": {"simple": "FASTEST"}}, "spec.loadBalancer.simple: expected one of ROUND_ROBIN,"),
        ({"loadBalancer": {}}, "spec.loadBalancer: set exactly one of simple and consistentHash"),
        (
            {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user", "useSourceIp": True}}},
            "spec.loadBalancer.consistentHash: set exactly one of httpHeaderName, httpCookie and useSourceIp",
        ),
        (
            {"loadBalancer": {"consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 65536}}}},
            "spec.loadBalancer.consistentHash.maglev.tableSize: 65536 is not a prime number",
        ),
        (
            {"loadBalancer": {"consistentHash": {"httpCookie": {"ttl": "1h"}}}},
            "spec.loadBalancer.consistentHash.httpCookie.name: required",
        ),
        ({"connectionPool": {"tcp": {"maxConnections": 0}}}, "spec.connectionPool.tcp.maxConnections: 0 is out of"),
        ({"connectionPool": {"http": {"maxRetries": "3"}}}, "spec.connectionPool.http.maxRetries: expected an integer"),
        ({"rateLimit": {"burst": 5}}, "spec.rateLimit.requestsPerUnit: required"),
        ({"rateLimit": {"requestsPerUnit": 5, "unit": "day"}}, "spec.rateLimit.unit: expected one of second, minute"),
        ({"targetRef": {"kind": "Deployment", "name": "web"}}, "spec.targetRef.kind: only a Service can be targeted"),
        ({"targetRef": {"name": "web", "port": 70000}}, "spec.targetRef.port: expected a port number"),
        ({"targetRef": None}, "spec.targetRef: required"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(spec: dict[str, Any], message: str) -> None:
    assert error(policy(**spec)).startswith(message)


def test_the_wrong_api_version_is_refused() -> None:
    obj = policy()
    obj["apiVersion"] = "networking.istio.io/v1"
    assert "unsupported apiVersion" in error(obj)


def test_a_valid_policy_is_sent_in_the_config_stream() -> None:
    store = ConfigStore(MeshSettings())
    store.apply([SourceBatch("traffic.yaml", (policy(rateLimit={"requestsPerUnit": 10}),))])
    item = store.state["traffic_policies"]["shop/web"]
    assert item["rateLimit"] == {  # type: ignore[typeddict-item]
        "requestsPerUnit": 10,
        "unit": "second",
        "burst": 10,
        "perSourceIdentity": False,
        "route": "",
    }


def test_a_bad_version_is_reported_with_file_object_and_field_and_the_last_good_one_stays() -> None:
    store = ConfigStore(MeshSettings())
    good = policy(outlierDetection={"baseEjectionTime": "10s"})
    store.apply([SourceBatch("traffic.yaml", (good,))])
    bad = copy.deepcopy(good)
    bad["spec"]["outlierDetection"]["baseEjectionTime"] = "10x"
    store.apply([SourceBatch("traffic.yaml", (bad,))])
    [reported] = store.all_errors()
    assert str(reported).startswith(
        "traffic.yaml: TrafficPolicy shop/web: spec.outlierDetection.baseEjectionTime: '10x' is not a duration"
    )
    assert store.state["traffic_policies"]["shop/web"]["outlierDetection"]["baseEjectionTime"] == "10s"  # type: ignore[index]


def test_of_two_policies_for_one_target_the_older_wins_and_the_other_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ConfigStore(MeshSettings())
    older = policy("first", "2026-01-01T00:00:00Z")
    newer = policy("second", "2026-02-01T00:00:00Z")
    with caplog.at_level(logging.WARNING):
        store.apply([SourceBatch("traffic.yaml", (newer, older))])
        store.apply([SourceBatch("traffic.yaml", (newer, older))])
    reason = "not in force: TrafficPolicy shop/first is older and targets the same Service shop/web"
    assert store.traffic_conflicts == {"shop/second": reason}
    assert [r.getMessage() for r in caplog.records].count(f"TrafficPolicy shop/second: {reason}") == 1
    # Both are sent: the proxy applies the same rule.
    assert set(store.state["traffic_policies"]) == {"shop/first", "shop/second"}


def test_policies_for_different_ports_do_not_conflict() -> None:
    a = TrafficPolicy.from_k8s(policy("a", targetRef={"name": "web", "port": 80}))
    b = TrafficPolicy.from_k8s(policy("b", targetRef={"name": "web", "port": 81}))
    c = TrafficPolicy.from_k8s(policy("c"))
    assert conflicts([a, b, c]) == {}
