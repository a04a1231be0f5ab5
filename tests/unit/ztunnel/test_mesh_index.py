"""The node proxy's view of the mesh: where a connection to an IP goes, built from what control sends.

Items are made with control's own model (`workload_item`, `service_item`), so these tests also check
that ztunnel reads the wire shape control actually produces.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import pytest

from control.model.kube import Namespace, Pod, Service, ServicePort
from control.model.mesh import MeshSettings, service_item, workload_item
from ztunnel.config.state import ConfigRejected, ConfigState, apply
from ztunnel.state.mesh import MeshIndex, NoHealthyEndpoint

SETTINGS = MeshSettings()
MESH_NS = Namespace("shop", (("meshlet.io/dataplane-mode", "ambient"),))
VIP = "10.96.0.10"


def pod(name: str, ip: str, ready: bool = True, ns: str = "shop") -> Pod:
    return Pod(
        uid=f"uid-{name}",
        name=name,
        namespace=ns,
        node="node1",
        service_account="web",
        ips=(ip,),
        labels=(("app", "web"),),
        host_network=False,
        phase="Running",
        ready=ready,
        container_ports=(("http", 8080),),
    )


def web_service(*ports: ServicePort) -> Service:
    ports = ports or (ServicePort("http", 80, 8080, "TCP"),)
    return Service("web", "shop", (VIP,), ports, (("app", "web"),))


def index_of(pods: list[Pod], services: list[Service] | None = None, namespace: Namespace = MESH_NS) -> MeshIndex:
    """The index a proxy would hold after control sent these objects as a snapshot."""
    message = snapshot(
        workloads=[workload_item(p, namespace, SETTINGS) for p in pods],
        services=[service_item(s, pods, SETTINGS) for s in services or []],
    )
    return MeshIndex.from_config(apply(ConfigState(), message))


def snapshot(**resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "snapshot", "epoch": "e1", "version": 7, "resources": resources}


def test_lookups_by_ip_and_vip() -> None:
    a, b = pod("web-a", "10.0.0.1"), pod("web-b", "10.0.0.2")
    index = index_of([a, b], [web_service()])
    assert index.version == 7
    assert index.by_ip["10.0.0.1"].name == "web-a"
    assert index.by_ip["10.0.0.2"].identity == "spiffe://cluster.local/ns/shop/sa/web"
    assert index.by_ip["10.0.0.1"].enrolled
    assert index.by_ip["10.0.0.1"].labels == {"app": "web"}
    assert index.by_vip[VIP].hostname == "web.shop.svc.cluster.local"
    assert index.services["shop/web"] is index.by_vip[VIP]
    assert "10.0.0.3" not in index.by_ip


def test_a_vip_round_robins_over_ready_endpoints_and_maps_the_port() -> None:
    pods = [pod("web-a", "10.0.0.1"), pod("web-b", "10.0.0.2"), pod("web-c", "10.0.0.3", ready=False)]
    index = index_of(pods, [web_service()])

    picks = [index.resolve(VIP, 80) for _ in range(6)]

    # The unready pod never gets a connection; the ready ones take turns.
    assert Counter(u.ip for u in picks) == {"10.0.0.1": 3, "10.0.0.2": 3}
    assert all(first.ip != second.ip for first, second in pairwise(picks))
    assert {u.port for u in picks} == {8080}  # service port 80 -> the pods' target port
    assert {u.workload.name for u in picks if u.workload is not None} == {"web-a", "web-b"}
    assert all(u.service is not None and u.service.name == "web" for u in picks)


def test_a_named_target_port_resolves_to_the_pods_container_port() -> None:
    index = index_of([pod("web-a", "10.0.0.1")], [web_service(ServicePort("http", 8000, "http", "TCP"))])
    assert index.resolve(VIP, 8000).port == 8080


def test_a_vip_without_ready_endpoints_has_no_healthy_endpoint() -> None:
    index = index_of([pod("web-a", "10.0.0.1", ready=False)], [web_service()])
    with pytest.raises(NoHealthyEndpoint, match="shop/web has no ready endpoint for port 80"):
        index.resolve(VIP, 80)


def test_a_vip_port_the_service_does_not_have_has_no_healthy_endpoint() -> None:
    index = index_of([pod("web-a", "10.0.0.1")], [web_service()])
    with pytest.raises(NoHealthyEndpoint, match="port 443"):
        index.resolve(VIP, 443)


def test_a_pod_ip_resolves_to_its_workload_as_addressed() -> None:
    index = index_of([pod("web-a", "10.0.0.1")], [web_service()])
    up = index.resolve("10.0.0.1", 9090)
    assert (up.ip, up.port, up.service) == ("10.0.0.1", 9090, None)
    assert up.workload is not None and up.workload.uid == "uid-web-a"


def test_an_unknown_ip_is_passed_through_without_a_workload() -> None:
    index = index_of([pod("web-a", "10.0.0.1")], [web_service()])
    up = index.resolve("192.0.2.50", 443)
    assert (up.ip, up.port, up.workload, up.service) == ("192.0.2.50", 443, None, None)


def test_a_pod_outside_the_mesh_is_known_but_not_enrolled() -> None:
    plain = Namespace("plain", ())
    index = index_of([pod("legacy", "10.0.1.1", ns="plain")], namespace=plain)
    workload = index.resolve("10.0.1.1", 80).workload
    assert workload is not None and not workload.enrolled


def validate(state: ConfigState) -> None:
    """As the config client's validator: convert, so that a version that cannot be is nacked."""
    MeshIndex.from_config(state)


def _rejected(collection: str, item: dict[str, Any]) -> str:
    with pytest.raises(ConfigRejected) as info:
        apply(ConfigState(), snapshot(**{collection: [item]}), validate)
    return str(info.value)


def test_a_workload_item_that_cannot_be_converted_is_rejected_naming_it() -> None:
    item = workload_item(pod("web-a", "10.0.0.1"), MESH_NS, SETTINGS)
    del item["identity"]
    assert _rejected("workloads", item) == "workloads/uid-web-a: identity: required"


def test_a_service_item_that_cannot_be_converted_is_rejected_naming_it() -> None:
    a = pod("web-a", "10.0.0.1")
    item = service_item(web_service(), [a], SETTINGS)
    item["endpoints"][0]["ports"] = {"80": "not-a-port"}
    assert _rejected("services", item) == (
        "services/shop/web: endpoints[0].ports.80: expected a port number in 1..65535, got 'not-a-port'"
    )


def test_one_bad_item_among_good_ones_rejects_the_version_naming_only_it() -> None:
    good = workload_item(pod("web-a", "10.0.0.1"), MESH_NS, SETTINGS)
    bad = workload_item(pod("web-b", "10.0.0.2"), MESH_NS, SETTINGS)
    bad["ips"] = None
    with pytest.raises(ConfigRejected, match=r"^workloads/uid-web-b: ips: required$"):
        apply(ConfigState(), snapshot(workloads=[good, bad]), validate)


def test_service_ports_say_which_are_http_and_why() -> None:
    a = pod("web-a", "10.0.0.1")
    service = web_service(
        ServicePort("http", 80, 8080, "TCP"),
        ServicePort("admin", 81, 9000, "TCP", "http"),
        ServicePort("http-raw", 82, 7000, "TCP", "tcp"),
        ServicePort("db", 5432, 5432, "TCP"),
    )
    index = index_of([a], [service])
    assert index.services["shop/web"].http_ports == {80: "port name http", 81: "appProtocol: http"}


def test_inbound_http_reason_follows_the_services_a_workload_backs() -> None:
    a, b, other = pod("web-a", "10.0.0.1"), pod("web-b", "10.0.0.2"), pod("db-a", "10.0.0.3", ns="data")
    service = web_service(ServicePort("http-web", 80, "http", "TCP"), ServicePort("tcp", 9000, 9000, "TCP"))
    index = index_of([a, b, other], [service])
    # The named target port `http` is the pods' 8080: connections into 8080 are HTTP, into 9000 not.
    assert index.http_reason_for("uid-web-a", 8080) == "service shop/web port 80: port name http-web"
    assert index.http_reason_for("uid-web-b", 8080) == "service shop/web port 80: port name http-web"
    assert index.http_reason_for("uid-web-a", 9000) is None
    assert index.http_reason_for("uid-web-a", 80) is None  # the service port, not the pod's
    assert index.http_reason_for("uid-db-a", 8080) is None  # another namespace: not an endpoint
    assert index.http_reason_for("uid-unknown", 8080) is None


def test_a_delta_converts_only_the_items_it_carries_and_a_bad_one_is_still_refused() -> None:
    pods = [pod(f"web-{i}", f"10.0.0.{i + 1}") for i in range(3)]
    first_state = apply(ConfigState(), snapshot(
        workloads=[workload_item(p, MESH_NS, SETTINGS) for p in pods],
        services=[service_item(web_service(), pods, SETTINGS)],
    ))  # fmt: skip
    first = MeshIndex.from_config(first_state)
    moved = pod("web-2", "10.0.0.9")
    delta = {"type": "delta", "epoch": "e1", "base": 7, "version": 8,
             "upsert": {"workloads": [workload_item(moved, MESH_NS, SETTINGS)]}, "remove": {}}  # fmt: skip
    second = MeshIndex.from_config(apply(first_state, delta), first)
    # Untouched items are the very objects the previous version converted; the changed one is new and right.
    assert second.workloads["uid-web-0"] is first.workloads["uid-web-0"]
    assert second.services["shop/web"] is first.services["shop/web"]
    assert second.workloads["uid-web-2"].ips == ("10.0.0.9",) and second.by_ip["10.0.0.9"].name == "web-2"
    assert "10.0.0.3" not in second.by_ip
    bad = {**delta, "version": 9, "base": 8,
           "upsert": {"workloads": [{**workload_item(moved, MESH_NS, SETTINGS), "ips": "10.0.0.9"}]}}  # fmt: skip
    with pytest.raises(ConfigRejected, match="workloads/"):
        apply(apply(first_state, delta), bad, lambda state: MeshIndex.from_config(state, second) and None)


def test_an_index_patched_delta_by_delta_equals_one_built_from_scratch() -> None:
    """Deltas that add, change (labels, IPs) and remove workloads and change a Service's endpoints, few and
    many at a time: the index patched from the previous one always equals a fresh conversion."""
    import random

    rng = random.Random(18)
    pods = {f"web-{i}": pod(f"web-{i}", f"10.0.{i // 200}.{i % 200 + 1}") for i in range(300)}

    def web() -> dict[str, Any]:
        return dict(service_item(web_service(), list(pods.values()), SETTINGS))

    items = [workload_item(p, MESH_NS, SETTINGS) for p in pods.values()]
    state = apply(ConfigState(), snapshot(workloads=items, services=[web()]))
    index = MeshIndex.from_config(state)
    for version in range(8, 40):
        size = rng.choice([1, 2, 5, 120])
        upserts, removes = [], []
        for name in rng.sample(sorted(pods), size):
            if rng.random() < 0.3:
                removes.append(f"uid-{name}")
                del pods[name]
            else:
                ip = f"10.1.{rng.randrange(200)}.{rng.randrange(1, 250)}"
                if any(p.ips == (ip,) for p in pods.values()):
                    continue
                pods[name] = pod(name, ip, ready=rng.random() < 0.8)
                upserts.append(workload_item(pods[name], MESH_NS, SETTINGS))
        delta = {"type": "delta", "epoch": "e1", "base": version - 1, "version": version,
                 "upsert": {"workloads": upserts, "services": [web()]},
                 "remove": {"workloads": removes}}  # fmt: skip
        state = apply(state, delta)
        index = MeshIndex.from_config(state, index)
        fresh = MeshIndex.from_config(state)
        assert (index.workloads, index.by_ip, index.services, index.by_vip, index.http_targets) == (
            fresh.workloads,
            fresh.by_ip,
            fresh.services,
            fresh.by_vip,
            fresh.http_targets,
        ), f"version {version}"
