"""ztunnel's index of HTTPRoutes: routes control accepted, per parent Service and port, read once per version."""

from __future__ import annotations

from typing import Any

import pytest

from control.model.kube import Service, ServicePort
from control.model.routes import HTTPRoute as K8sRoute
from control.model.routes import with_status
from ztunnel.config.state import ConfigRejected, ConfigState
from ztunnel.state.mesh import MeshIndex


def route(name: str, parents: list[dict[str, Any]]) -> dict[str, Any]:
    obj = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", **p} for p in parents],
                 "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
    }  # fmt: skip
    ports = (ServicePort("http", 80, 8080, "TCP"), ServicePort("admin", 81, 9000, "TCP"))
    services = {"shop/web": Service("web", "shop", ("10.96.0.1",), ports, None)}
    return dict(with_status(K8sRoute.from_k8s(obj), services).to_wire())


def index(*items: dict[str, Any]) -> MeshIndex:
    state = ConfigState("e", 1, {"http_routes": {f"{i['namespace']}/{i['name']}": i for i in items}})
    return MeshIndex.from_config(state)


def test_routes_per_service_and_port_only_accepted_parents() -> None:
    every_port = route("all", [{"name": "web"}])
    admin_only = route("admin", [{"name": "web", "port": 81}])
    missing = route("ghost", [{"name": "nope"}])  # parent Service does not exist: not accepted, not indexed
    idx = index(every_port, admin_only, missing)
    assert [r.name for r in idx.routes_for("shop/web", 80)] == ["all"]
    assert sorted(r.name for r in idx.routes_for("shop/web", 81)) == ["admin", "all"]
    assert idx.routes_for("shop/nope", 80) == ()


def test_a_route_ztunnel_cannot_read_rejects_the_version_naming_it() -> None:
    bad = route("all", [{"name": "web"}])
    bad["rules"][0]["matches"][0]["path"]["type"] = "Glob"
    with pytest.raises(ConfigRejected, match=r"http_routes/shop/all: .*rules\[0\].matches\[0\].path.type"):
        index(bad)
