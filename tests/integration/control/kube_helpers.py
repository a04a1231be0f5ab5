"""The kubernetes source against the test API server: a server with the mesh's CRDs, objects to seed, and a
source running on the test's loop with every sink call recorded."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from control.model.fields import ObjectKey
from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.sources.kube_api import CONTROL_RESOURCES, Resource, request_json
from control.sources.kubernetes import KubeSource
from control.store import ConfigStore
from tests.integration.control.conftest import free_port
from tests.kubeapi import KubeApiServer, ResourceType

AMBIENT = {"meshlet.io/dataplane-mode": "ambient"}


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with KubeApiServer(history=500, bookmark_interval=0.2) as server:
        for r in CONTROL_RESOURCES:
            if r.group:  # the mesh's CRDs and Gateway API's, as an install would have them
                server.store.register(ResourceType.custom(r.group, r.version, r.kind, r.plural))
        yield server


def create(api: KubeApiServer, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """Create through the store directly (status kept: tests seed pods that already run)."""
    rt = api.store.types[(resource.group, resource.version, resource.plural)]
    return api.store.create(rt, obj["metadata"].get("namespace", ""), obj, keep_status=True)


def call(api: KubeApiServer, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
    """One request through the API, as a user's kubectl would send it."""
    return request_json(api.api_client(), method, path, body=body, content_type=content_type)


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def pod(name: str, ip: str, node: str = "node-1", ns: str = "mesh", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "serviceAccountName": "web", "containers": [{"name": "app"}], **spec},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def service(name: str, ip: str, ns: str = "mesh", port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": ip, "selector": {"app": "web"}, "ports": [{"name": "http", "port": port}]},
    }


def server_keys(api: KubeApiServer, resources: Sequence[Resource] = CONTROL_RESOURCES) -> dict[ObjectKey, str]:
    """Every object the server holds of `resources`, with its resourceVersion."""
    out: dict[ObjectKey, str] = {}
    for r in resources:
        rt = api.store.types.get((r.group, r.version, r.plural))
        if rt is None:
            continue
        items, _ = api.store.snapshot(rt, None)
        for (ns, name), obj in items.items():
            out[ObjectKey(r.kind, ns, name)] = obj["metadata"]["resourceVersion"]
    return out


def known_keys(source: KubeSource) -> dict[ObjectKey, str]:
    return {
        ObjectKey(r.kind, ns, name): obj["metadata"]["resourceVersion"]
        for r, objects in source.known.items()
        for (ns, name), obj in objects.items()
    }


class Recorder:
    """A store fed by the source, and every sink call it made."""

    def __init__(self) -> None:
        self.store = ConfigStore(MeshSettings())
        self.calls: list[list[SourceBatch]] = []

    def __call__(self, batches: Sequence[SourceBatch]) -> None:
        self.calls.append(list(batches))
        self.store.apply(batches)

    def upserts(self, kind: str, name: str) -> int:
        return sum(
            1 for c in self.calls for b in c for o in b.upserts if o["kind"] == kind and o["metadata"]["name"] == name
        )


@contextlib.asynccontextmanager
async def running(source: KubeSource, sink: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def source_for(api: KubeApiServer, resources: Sequence[Resource] = CONTROL_RESOURCES, **kwargs: Any) -> KubeSource:
    kwargs.setdefault("timeout_seconds", 5)
    kwargs.setdefault("missing_retry", 0.5)
    return KubeSource(api.api_client, resources, **kwargs)


@contextlib.contextmanager
def control_process(
    api: KubeApiServer, tmp_path: Path, state: Path, metrics: int, nodes: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m control serve --source kubernetes` against `api`, its output in `<tmp>/control-<state>.log`;
    stopped (SIGTERM) when the block ends, and its log must hold no traceback."""
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    log_path = tmp_path / f"control-{state.name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "control", "serve", "--source", "kubernetes", "--kubeconfig", str(kubeconfig),
             "--state", str(state), "--listen", f"127.0.0.1:{nodes or free_port()}",
             "--metrics", f"127.0.0.1:{metrics}", "--trust-domain", "td.test"],
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()
