"""What control writes back to the API server: an Event for a rejected object, and HTTPRoute status."""

from __future__ import annotations

from typing import Any

import pytest

from control.model.fields import ObjectKey
from control.sources.kube_api import HTTP_ROUTES, NAMESPACES, SECURITY, SERVICES
from control.sources.reporting import CONTROLLER, KubeReporter
from tests.conftest import until
from tests.integration.control.kube_helpers import (
    AMBIENT,
    Recorder,
    call,
    create,
    kube,
    namespace,
    running,
    service,
    source_for,
)
from tests.kubeapi import KubeApiServer

pytestmark = pytest.mark.asyncio
__all__ = ["kube"]
MERGE = "application/merge-patch+json"
POLICY_PATH = "/apis/security.meshlet.io/v1/namespaces/mesh/authorizationpolicies/allow"
ROUTE_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/mesh/httproutes/r"


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": "security.meshlet.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow", "namespace": "mesh"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["td/ns/a/sa/b"]}}]}]},
    }


def _route(status: dict[str, Any] | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "mesh"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    }
    if status is not None:
        route["status"] = status
    return route


def _events(kube: KubeApiServer, name: str) -> list[dict[str, Any]]:
    answer = call(kube, "GET", f"/api/v1/namespaces/mesh/events?fieldSelector=involvedObject.name%3D{name}")
    return list(answer["items"])


def _reporter(kube: KubeApiServer, rec: Recorder) -> tuple[Any, KubeReporter]:
    source = source_for(kube)
    return source, KubeReporter(kube.api_client, rec.store, source)


async def test_a_rejected_object_keeps_its_last_good_version_and_gets_one_event(kube: KubeApiServer) -> None:
    create(kube, NAMESPACES, namespace("mesh", AMBIENT))
    created = create(kube, SECURITY[0], _policy())
    rec = Recorder()
    source, reporter = _reporter(kube, rec)
    key = ObjectKey("AuthorizationPolicy", "mesh", "allow")
    async with running(source, reporter.sink):
        await until(lambda: key in rec.store.objects, "the policy in force")
        call(kube, "PATCH", POLICY_PATH, {"spec": {"action": "BOGUS"}}, MERGE)
        await until(lambda: rec.store.all_errors(), "the rejection in the store's errors")
        [error] = rec.store.all_errors()
        assert error.origin == "kubernetes: AuthorizationPolicy.security.meshlet.io mesh/allow"
        assert "BOGUS" in error.reason
        assert rec.store.objects[key].action == "ALLOW"  # type: ignore[union-attr]  # the last good version
        await until(lambda: _events(kube, "allow"), "an Event about the policy", timeout=5)
        # Unrelated changes afterwards tell nothing new.
        call(kube, "POST", "/api/v1/namespaces/mesh/services", service("db", "10.96.0.2"))
        await until(lambda: ObjectKey("Service", "mesh", "db") in rec.store.objects, "the unrelated Service")
        [event] = _events(kube, "allow")
        assert (event["type"], event["reason"]) == ("Warning", "InvalidConfig")
        assert event["message"] == error.reason
        involved = event["involvedObject"]
        assert involved["uid"] == created["metadata"]["uid"]
        assert (involved["apiVersion"], involved["kind"], involved["namespace"]) == (
            "security.meshlet.io/v1",
            "AuthorizationPolicy",
            "mesh",
        )
        # Fixed, then broken the same way again: that is news, told once more.
        call(kube, "PATCH", POLICY_PATH, {"spec": {"action": "DENY"}}, MERGE)
        await until(lambda: not rec.store.all_errors(), "the error cleared once fixed")
        call(kube, "PATCH", POLICY_PATH, {"spec": {"action": "BOGUS"}}, MERGE)
        await until(lambda: len(_events(kube, "allow")) == 2, "a second Event for the second rejection")
    reporter.close()


def _ours(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in route.get("status", {}).get("parents", []) if p.get("controllerName") == CONTROLLER]


def _status_writes(kube: KubeApiServer) -> int:
    return sum(1 for method, path in kube.requests if method == "PATCH" and path.startswith(ROUTE_PATH + "/status"))


async def test_httproute_status_is_written_once_per_change_beside_other_controllers(kube: KubeApiServer) -> None:
    create(kube, NAMESPACES, namespace("mesh", AMBIENT))
    create(kube, SERVICES, service("web", "10.96.0.1"))
    theirs = {"parentRef": {"name": "gw"}, "controllerName": "example.com/gateway", "conditions": []}
    create(kube, HTTP_ROUTES, _route({"parents": [theirs]}))
    rec = Recorder()
    source, reporter = _reporter(kube, rec)
    async with running(source, reporter.sink):
        await until(lambda: _ours(call(kube, "GET", ROUTE_PATH)), "our status on the route", timeout=5)
        route = call(kube, "GET", ROUTE_PATH)
        [ours] = _ours(route)
        assert ours["parentRef"] == {"group": "", "kind": "Service", "name": "web", "namespace": "mesh", "port": 80}
        conditions = {c["type"]: c for c in ours["conditions"]}
        assert (conditions["Accepted"]["status"], conditions["ResolvedRefs"]["status"]) == ("True", "True")
        assert conditions["Accepted"]["observedGeneration"] == route["metadata"]["generation"]
        assert conditions["Accepted"]["lastTransitionTime"]
        assert theirs in route["status"]["parents"]  # another controller's entry is left alone
        writes = _status_writes(kube)
        assert writes == 1
        # The route's own status event and unrelated changes come back: nothing new to write.
        call(kube, "POST", "/api/v1/namespaces/mesh/services", service("db", "10.96.0.2"))
        await until(lambda: ObjectKey("Service", "mesh", "db") in rec.store.objects, "the unrelated Service")
        assert _status_writes(kube) == writes
        # The parent Service goes: the route is no longer accepted, and says why.
        call(kube, "DELETE", "/api/v1/namespaces/mesh/services/web")

        def accepted() -> str:
            [entry] = _ours(call(kube, "GET", ROUTE_PATH))
            return str(next(c for c in entry["conditions"] if c["type"] == "Accepted")["reason"])

        await until(lambda: accepted() == "NoMatchingParent", "Accepted=False written back", timeout=5)
        assert _status_writes(kube) == writes + 1
        assert theirs in call(kube, "GET", ROUTE_PATH)["status"]["parents"]
    reporter.close()
