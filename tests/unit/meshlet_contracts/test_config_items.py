"""Config items: what control builds is exactly what the definitions say, older items still read, and a bad item
is refused naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any, get_type_hints

import pytest

from control.model.kube import Namespace, Pod, Service, ServicePort
from control.model.mesh import MeshSettings, build_state, service_item, workload_item
from control.model.security import AuthorizationPolicy, PeerAuthentication
from meshlet_contracts.config_items import (
    AuthorizationPolicyItem,
    EndpointItem,
    ItemError,
    OperationItem,
    PeerAuthenticationItem,
    RuleItem,
    ServiceItem,
    ServicePortItem,
    SourceItem,
    WorkloadItem,
    parse_service,
    parse_workload,
)
from meshlet_contracts.policy import OPERATION_FIELDS, SOURCE_FIELDS
from meshlet_contracts.wire import COLLECTIONS, item_key

SETTINGS = MeshSettings()
NS = Namespace("shop", (("meshlet.io/dataplane-mode", "ambient"),))
POD = Pod(
    uid="uid-web",
    name="web",
    namespace="shop",
    node="node1",
    service_account="web",
    ips=("10.0.0.1",),
    labels=(("app", "web"),),
    host_network=False,
    phase="Running",
    ready=True,
    container_ports=(("http", 8080),),
)
# appProtocol set, so the item carries every optional key of a service port.
SERVICE = Service("web", "shop", ("10.96.0.10",), (ServicePort("http", 80, "http", "TCP", "http"),), (("app", "web"),))
AUTHZ = AuthorizationPolicy.from_k8s(
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"rules": [{"from": [{"source": {"namespaces": ["shop"]}}]}]},
    }
)
PEER = PeerAuthentication.from_k8s(
    {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"mtls": {"mode": "STRICT"}},
    }
)


def keys(cls: type) -> set[str]:
    return set(get_type_hints(cls))


def test_control_builds_every_item_with_exactly_the_defined_keys() -> None:
    state = build_state([NS, POD, SERVICE, AUTHZ, PEER], SETTINGS)
    assert set(state) == set(COLLECTIONS)
    [workload] = state["workloads"].values()
    [service] = state["services"].values()
    [authz] = state["authorization_policies"].values()
    [peer] = state["peer_authentications"].values()
    assert set(workload) == keys(WorkloadItem)
    assert set(service) == keys(ServiceItem)
    assert set(service["ports"][0]) == keys(ServicePortItem)
    assert set(service["endpoints"][0]) == keys(EndpointItem)
    assert set(authz) == keys(AuthorizationPolicyItem)
    assert set(peer) == keys(PeerAuthenticationItem)
    [rule] = authz["rules"]
    assert set(rule) == keys(RuleItem)
    assert set(rule["from"][0]) == keys(SourceItem) == set(SOURCE_FIELDS)
    assert set(OPERATION_FIELDS) == keys(OperationItem)
    # Each collection keys its items as the envelope says.
    assert list(state["workloads"]) == [item_key("workloads", workload)] == ["uid-web"]
    assert list(state["services"]) == ["shop/web"]
    assert list(state["authorization_policies"]) == ["shop/web"]
    assert list(state["peer_authentications"]) == ["shop/default"]


def test_control_items_parse_back_unchanged_after_json() -> None:
    workload = workload_item(POD, NS, SETTINGS)
    service = service_item(SERVICE, [POD], SETTINGS)
    assert parse_workload(json.loads(json.dumps(workload))) == workload
    assert parse_service(json.loads(json.dumps(service))) == service
    assert service["endpoints"][0]["ports"] == {"80": 8080}  # the named target port, resolved by control


def test_items_of_an_older_or_newer_control_still_read() -> None:
    """Optional keys may be absent (older control) and unknown keys are ignored (newer control)."""
    workload: dict[str, Any] = dict(workload_item(POD, NS, SETTINGS))
    for key in ("node", "labels", "ready"):
        del workload[key]
    workload["zone"] = "eu-1"
    parsed = parse_workload(workload)
    assert (parsed["node"], parsed["labels"], parsed["ready"]) == ("", {}, True)
    service: dict[str, Any] = copy.deepcopy(dict(service_item(SERVICE, [POD], SETTINGS)))
    del service["hostname"]
    del service["endpoints"][0]["ready"]
    service["ports"] = [{"port": 80}]
    service["trafficPolicy"] = {}
    parsed_service = parse_service(service)
    assert parsed_service["hostname"] == ""
    assert parsed_service["endpoints"][0]["ready"] is True
    assert parsed_service["ports"] == [{"port": 80}]


def _changed(item: Any, path: tuple[Any, ...], value: Any) -> Any:
    item = copy.deepcopy(item)
    target = item
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return item


_DELETE = object()

BAD_WORKLOADS = [
    (("identity",), _DELETE, "identity: required"),
    (("uid",), "", "uid: expected a non-empty string, got ''"),
    (("serviceAccount",), 7, "serviceAccount: expected a non-empty string, got 7"),
    (("ips",), None, "ips: required"),
    (("ips",), "10.0.0.1", "ips: expected a list, got str"),
    (("ips", 0), "", "ips[0]: expected a non-empty string, got ''"),
    (("labels",), ["app"], "labels: expected a mapping, got list"),
    (("labels", "app"), 1, "labels.app: expected string keys and values, got 'app': 1"),
    (("enrolled",), "yes", "enrolled: expected true or false, got 'yes'"),
    (("enrolled",), _DELETE, "enrolled: required"),
    (("node",), 3, "node: expected a string, got int 3"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_WORKLOADS, ids=[m[2] for m in BAD_WORKLOADS])
def test_a_bad_workload_item_names_its_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(ItemError) as info:
        parse_workload(_changed(workload_item(POD, NS, SETTINGS), path, value))
    assert str(info.value) == message


BAD_SERVICES = [
    (("vips",), _DELETE, "vips: required"),
    (("ports", 0, "port"), "http", "ports[0].port: expected a port number in 1..65535, got 'http'"),
    (("ports", 0, "targetPort"), 0, "ports[0].targetPort: expected a port number in 1..65535, got 0"),
    (("ports", 0, "appProtocol"), 7, "ports[0].appProtocol: expected a string, got int 7"),
    (("endpoints", 0), "x", "endpoints[0]: expected a mapping, got str"),
    (("endpoints", 0, "workloadUid"), None, "endpoints[0].workloadUid: required"),
    (("endpoints", 0, "ports", "80"), 70000, "endpoints[0].ports.80: expected a port number in 1..65535, got 70000"),
    (("endpoints", 0, "ports"), {"http": 8080}, "endpoints[0].ports.http: expected a port number"),
    (("endpoints", 0, "ready"), "true", "endpoints[0].ready: expected true or false, got 'true'"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_SERVICES, ids=[m[2] for m in BAD_SERVICES])
def test_a_bad_service_item_names_its_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(ItemError) as info:
        parse_service(_changed(service_item(SERVICE, [POD], SETTINGS), path, value))
    assert str(info.value).startswith(message)


def test_an_item_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ItemError, match="^expected a mapping, got list$"):
        parse_workload([])
