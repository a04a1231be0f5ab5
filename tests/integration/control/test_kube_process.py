"""`python -m control serve --source kubernetes`: the real process, reading the mesh from the API server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from control.sources.kube_api import NAMESPACES, PODS, SECURITY, SERVICES
from tests.conftest import wait_for
from tests.integration.control.conftest import free_port
from tests.integration.control.kube_helpers import (
    AMBIENT,
    call,
    control_process,
    create,
    kube,
    namespace,
    pod,
    service,
)
from tests.kubeapi import KubeApiServer

__all__ = ["kube"]


def _status(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/status", timeout=2) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result
    except (urllib.error.URLError, OSError):
        return {}


def test_control_serves_what_the_api_server_holds(kube: KubeApiServer, tmp_path: Path) -> None:
    create(kube, NAMESPACES, namespace("meshlet-system"))
    create(kube, NAMESPACES, namespace("mesh", AMBIENT))
    create(kube, PODS, pod("a", "10.0.0.1"))
    create(kube, SERVICES, service("web", "10.96.0.1"))
    bad = {"apiVersion": "security.meshlet.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": "bad", "namespace": "mesh"}, "spec": {"action": "BOGUS"}}  # fmt: skip
    create(kube, SECURITY[0], bad)
    metrics = free_port()
    with control_process(kube, tmp_path, tmp_path / "state", metrics):
        status = wait_for(lambda: _status(metrics).get("synced") and _status(metrics), 20, "control synced")
        # Four default namespaces, meshlet-system, mesh, the pod and the Service.
        assert (status["source"], status["objects"]) == ("kubernetes", 8)
        [error] = status["errors"]
        assert error["origin"] == "kubernetes: AuthorizationPolicy.security.meshlet.io mesh/bad"
        assert error["object"] == "AuthorizationPolicy mesh/bad" and "BOGUS" in error["reason"]
        events = wait_for(lambda: call(kube, "GET", "/api/v1/namespaces/mesh/events")["items"], 10, "the Event")
        assert [(e["involvedObject"]["name"], e["reason"]) for e in events] == [("bad", "InvalidConfig")]
        call(kube, "POST", "/api/v1/namespaces/mesh/services", service("db", "10.96.0.2"))
        wait_for(lambda: _status(metrics)["objects"] == 9, 10, "the new Service in control")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def test_control_started_while_the_api_server_is_down_is_alive_not_ready_then_ready(
    kube: KubeApiServer, tmp_path: Path
) -> None:
    """A liveness probe must not kill control while it waits for its first listing; readiness says why."""
    create(kube, NAMESPACES, namespace("meshlet-system"))  # where control keeps its CA Secret and root ConfigMap
    kube.down()
    metrics = free_port()
    with control_process(kube, tmp_path, tmp_path / "state", metrics):
        wait_for(lambda: _get(metrics, "/healthz")[0] == 200, 20, "control's /healthz with the API server down")
        assert _get(metrics, "/ready") == (503, "store not loaded yet\n")
        assert _get(metrics, "/debug/status")[0] == 200
        kube.up()
        wait_for(lambda: _get(metrics, "/ready")[0] == 200, 30, "control ready once the API server is back")
