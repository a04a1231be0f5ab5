"""Where an outbound connection goes: the pure routing decision, case by case, with no sockets.

The mesh is built with control's own model and sent through ztunnel's config conversion (as in
`test_mesh_index.py`), so the decision is checked on the wire shape control produces. Each case names
the original destination and the answer, as ztunnel's `build_request_*` tests do.
"""

from __future__ import annotations

from typing import Any

import pytest

from control.model.kube import Namespace, Pod, Service, ServicePort
from control.model.mesh import MeshSettings, service_item, workload_item
from ztunnel.config.state import ConfigState, apply
from ztunnel.proxy.context import ServedPod
from ztunnel.proxy.route import Hbone, Local, Passthrough, Refuse, Route, route
from ztunnel.state.mesh import MeshIndex

SETTINGS = MeshSettings()
MESH = Namespace("shop", (("meshlet.io/dataplane-mode", "ambient"),))
PLAIN = Namespace("legacy", ())
WEB_ID = "spiffe://cluster.local/ns/shop/sa/web"
DB_ID = "spiffe://cluster.local/ns/shop/sa/db"
WEB_VIP, DB_VIP, LEGACY_VIP, EMPTY_VIP, LOOP_VIP = "10.96.0.10", "10.96.0.11", "10.96.0.12", "10.96.0.13", "10.96.0.14"


def pod(name: str, ip: str, sa: str, ns: str = "shop", ready: bool = True, app: str | None = None) -> Pod:
    return Pod(
        uid=f"uid-{name}",
        name=name,
        namespace=ns,
        node="node1",
        service_account=sa,
        ips=(ip,),
        labels=(("app", app or sa),),
        host_network=False,
        phase="Running",
        ready=ready,
        container_ports=(("http", 8080),),
    )


WEB_1 = pod("web-1", "10.0.1.5", "web")  # served by this process
DB_1, DB_2 = pod("db-1", "10.0.2.5", "db"), pod("db-2", "10.0.2.6", "db")  # on other nodes
LEGACY = pod("legacy-1", "10.0.3.5", "old", ns="legacy")  # not enrolled
GONE = pod("gone-1", "10.0.2.9", "gone", ready=False)


def service(name: str, ns: str, vip: str, app: str, target: int | str = 8080) -> Service:
    return Service(name, ns, (vip,), (ServicePort("http", 80, target, "TCP"),), (("app", app),))


def mesh_index() -> MeshIndex:
    """The index a proxy holds after control sent this mesh as a snapshot."""
    pods = [WEB_1, DB_1, DB_2, LEGACY, GONE]
    namespaces = {"shop": MESH, "legacy": PLAIN}
    services = [
        service("web", "shop", WEB_VIP, "web"),
        service("db", "shop", DB_VIP, "db"),
        service("old", "legacy", LEGACY_VIP, "old"),
        service("gone", "shop", EMPTY_VIP, "gone"),
        service("loop", "shop", LOOP_VIP, "db", target=15008),
    ]
    message = {
        "type": "snapshot",
        "epoch": "e1",
        "version": 1,
        "resources": {
            "workloads": [workload_item(p, namespaces[p.namespace], SETTINGS) for p in pods],
            "services": [service_item(s, pods, SETTINGS) for s in services],
        },
    }
    return MeshIndex.from_config(apply(ConfigState(), message))


SERVED = {
    "uid-web-1": ServedPod("uid-web-1", "web-1", "shop", "web", WEB_ID, ("10.0.1.5",), netns_fd=-1),
}


def summary(decision: Route) -> tuple[Any, ...]:
    """A decision as the table states it: kind, where to, and what must be proved or why not."""
    if isinstance(decision, Refuse):
        return ("refuse", decision.reason)
    up = decision.upstream
    where = f"{up.ip}:{up.port}"
    if isinstance(decision, Local):
        return ("local", decision.pod.name, where, decision.identity)
    if isinstance(decision, Hbone):
        return ("hbone", where, decision.identity)
    assert isinstance(decision, Passthrough)
    return ("passthrough", where)


CASES = [
    # (what, original destination, decision)
    ("an enrolled pod on another node", ("10.0.2.5", 8080), ("hbone", "10.0.2.5:8080", DB_ID)),
    ("an enrolled pod on any port of its app", ("10.0.2.5", 9090), ("hbone", "10.0.2.5:9090", DB_ID)),
    ("an enrolled pod served here", ("10.0.1.5", 8080), ("local", "web-1", "10.0.1.5:8080", WEB_ID)),
    ("a VIP whose endpoint is served here", (WEB_VIP, 80), ("local", "web-1", "10.0.1.5:8080", WEB_ID)),
    ("a pod outside the mesh", ("10.0.3.5", 8080), ("passthrough", "10.0.3.5:8080")),
    ("a VIP of pods outside the mesh", (LEGACY_VIP, 80), ("passthrough", "10.0.3.5:8080")),
    ("an address the mesh does not know", ("93.184.216.34", 443), ("passthrough", "93.184.216.34:443")),
    ("a VIP without a ready endpoint", (EMPTY_VIP, 80), ("refuse", "no_healthy_endpoint")),
    ("a VIP on a port it does not have", (DB_VIP, 443), ("refuse", "no_healthy_endpoint")),
    ("ztunnel's 15001 anywhere", ("93.184.216.34", 15001), ("refuse", "self_loop")),
    ("ztunnel's 15006 of a pod outside the mesh", ("10.0.3.5", 15006), ("refuse", "self_loop")),
    ("ztunnel's 15008 of an enrolled pod", ("10.0.2.5", 15008), ("refuse", "self_loop")),
    ("ztunnel's admin port of an enrolled pod", ("10.0.2.5", 15000), ("refuse", "self_loop")),
    ("ztunnel's readiness port of a pod served here", ("10.0.1.5", 15021), ("refuse", "self_loop")),
    ("a VIP whose target port is an enrolled pod's 15008", (LOOP_VIP, 80), ("refuse", "self_loop")),
    ("port 15020 of a pod outside the mesh (its own app)", ("10.0.3.5", 15020), ("passthrough", "10.0.3.5:15020")),
]


@pytest.mark.parametrize(("what", "destination", "expected"), CASES, ids=[c[0] for c in CASES])
def test_route(what: str, destination: tuple[str, int], expected: tuple[Any, ...]) -> None:
    assert summary(route(mesh_index(), SERVED, *destination)) == expected


def test_a_vip_of_enrolled_pods_elsewhere_takes_its_endpoints_in_turn_over_hbone() -> None:
    index = mesh_index()
    picks = [summary(route(index, SERVED, DB_VIP, 80)) for _ in range(4)]
    assert picks == [("hbone", "10.0.2.5:8080", DB_ID), ("hbone", "10.0.2.6:8080", DB_ID)] * 2


def test_the_same_pod_is_local_only_to_the_process_that_serves_it() -> None:
    index = mesh_index()
    assert summary(route(index, {}, "10.0.1.5", 8080)) == ("hbone", "10.0.1.5:8080", WEB_ID)


def test_a_vip_keeps_its_service_for_the_metrics_labels() -> None:
    decision = route(mesh_index(), SERVED, DB_VIP, 80)
    assert isinstance(decision, Hbone)
    assert decision.upstream.service is not None
    assert (decision.upstream.service.namespace, decision.upstream.service.name) == ("shop", "db")
