"""A node proxy's view of a small mesh with HTTPRoutes and TrafficPolicies, for the traffic-management unit tests.

Everything goes through the wire: Services as control sends them, routes and policies as their contracts' `to_wire`
writes them (routes with control's `Accepted` status per parent), then `MeshIndex.from_config`, as a proxy reads a
config version. So the tests see the shapes the data path sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshlet_contracts.routes import Condition, HTTPRoute, ParentRef, ParentStatus, RouteRule
from meshlet_contracts.traffic import TargetRef, TrafficPolicy
from ztunnel.config.state import ConfigState
from ztunnel.l7.messages import Head
from ztunnel.state.mesh import MeshIndex

NS = "shop"
POD_PORT = 8080


def service(name: str, ips: Sequence[str] = ("10.0.1.1", "10.0.1.2"), ports: Sequence[int] = (80,),
            namespace: str = NS, vip: str = "") -> dict[str, Any]:  # fmt: skip
    """A Service item: an HTTP port per entry of `ports`, one ready endpoint per IP serving all of them."""
    return {
        "name": name,
        "namespace": namespace,
        "vips": [vip or f"10.96.{len(name)}.{sum(name.encode()) % 250}"],
        "ports": [{"name": f"http-{p}", "port": p, "targetPort": POD_PORT} for p in ports],
        "endpoints": [
            {"workloadUid": f"uid-{name}-{i}", "ip": ip, "ports": {str(p): POD_PORT for p in ports}}
            for i, ip in enumerate(ips)
        ],
    }


def route(name: str, *rules: RouteRule, parent: str = "web", port: int | None = None, namespace: str = NS,
          parent_namespace: str = "") -> HTTPRoute:  # fmt: skip
    """An HTTPRoute attached to Service `parent` (of the route's namespace unless given), accepted there."""
    ref = ParentRef(parent, parent_namespace or namespace, port)
    accepted = ParentStatus(ref, (Condition("Accepted", "True", "Accepted"),))
    return HTTPRoute(name, namespace, (ref,), rules, "", (accepted,))


def policy(name: str, target: str = "web", port: int | None = None, **sections: Any) -> TrafficPolicy:
    """A TrafficPolicy of the `shop` namespace for Service `target` (every port, or `port`)."""
    return TrafficPolicy(name, NS, TargetRef(target, port), **sections)


def mesh(services: Sequence[dict[str, Any]], routes: Sequence[HTTPRoute] = (),
         policies: Sequence[TrafficPolicy] = (), version: int = 1) -> MeshIndex:  # fmt: skip
    """The index a proxy holds for this config version."""
    resources = {
        "services": {f"{s['namespace']}/{s['name']}": s for s in services},
        "http_routes": {r.ref: dict(r.to_wire()) for r in routes},
        "traffic_policies": {p.ref: dict(p.to_wire()) for p in policies},
    }
    return MeshIndex.from_config(ConfigState("e", version, resources))


def request(target: str = "/", method: str = "GET", host: str = "web.shop:80", **headers: str) -> Head:
    """A request head as parsed (header names as a client writes them: `x_canary` -> `X-Canary`)."""
    extra = [(name.replace("_", "-").title().encode(), value.encode()) for name, value in headers.items()]
    return Head("1.1", [(b"Host", host.encode()), *extra], method=method, target=target)
