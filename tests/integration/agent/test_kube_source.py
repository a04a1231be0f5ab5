"""The agent on Kubernetes: it lists and watches Namespaces and only its own node's Pods (a fieldSelector the API
server applies), and records a pod's enrollment with a merge patch of the pod's annotations."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from agent.annotating import ANNOTATION
from agent.annotating_kube import AnnotationError
from agent.enrolling import PodTarget, node_pods
from agent.main import Agent, parser
from control.model.fields import ObjectKey
from control.sources.kube_api import NAMESPACES, PODS
from tests.conftest import until
from tests.integration.control.kube_helpers import AMBIENT, call, create, kube, namespace, pod
from tests.kubeapi import KubeApiServer

pytestmark = pytest.mark.asyncio
__all__ = ["kube"]


class RecordingReconciler:
    """Stands in for the real reconciler (which enters every network namespace): records each pass's targets."""

    def __init__(self) -> None:
        self.passes: list[dict[str, PodTarget]] = []
        self.pods: dict[str, Any] = {}

    async def sync(self, targets: dict[str, PodTarget]) -> None:
        self.passes.append(targets)

    def replay(self) -> list[tuple[str, Any, int]]:
        return []


@contextlib.asynccontextmanager
async def agent_on(kube: KubeApiServer, tmp_path: Path) -> AsyncIterator[tuple[Agent, RecordingReconciler]]:
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    args = parser().parse_args(
        ["--source", "kubernetes", "--kubeconfig", str(kubeconfig), "--node", "node-1",
         "--zds-socket", str(tmp_path / "zds.sock"), "--status-socket", str(tmp_path / "agent.sock"),
         "--redirect", "iptables", "--probe-ip", "10.1.0.1"]
    )  # fmt: skip
    agent = Agent(args)
    reconciler = RecordingReconciler()
    agent.reconciler = reconciler  # type: ignore[assignment]
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: agent.store.synced or task.done(), "the agent to list its pods", timeout=10)
        assert not task.done(), task
        yield agent, reconciler
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _seed(kube: KubeApiServer) -> None:
    create(kube, NAMESPACES, namespace("mesh", AMBIENT))
    create(kube, PODS, pod("mine", "10.0.0.1"))
    create(kube, PODS, pod("theirs", "10.0.0.2", node="node-2"))
    host = pod("host", "192.168.0.1", hostNetwork=True)
    host["metadata"]["annotations"] = {"other.io/keep": "yes"}
    create(kube, PODS, host)


async def test_the_agent_watches_only_its_nodes_pods(kube: KubeApiServer, tmp_path: Path) -> None:
    _seed(kube)
    async with agent_on(kube, tmp_path) as (agent, reconciler):
        pods = {k.name for k in agent.store.objects if k.kind == "Pod"}
        assert pods == {"mine", "host"}
        create(kube, PODS, pod("late", "10.0.0.3"))
        create(kube, PODS, pod("elsewhere", "10.0.0.4", node="node-2"))
        await until(lambda: ObjectKey("Pod", "mesh", "late") in agent.store.objects, "the new pod of this node")
        assert ObjectKey("Pod", "mesh", "elsewhere") not in agent.store.objects
        # The host-network pod is known but never enrolled: it shares the node's network namespace.
        targets = node_pods(agent.store.objects.values(), "node-1", agent.mesh)
        assert {t.name for t in targets.values()} == {"mine", "late"}
        await until(lambda: reconciler.passes and len(reconciler.passes[-1]) == 2, "a pass with this node's pods")
        store = agent.snapshot()["store"]
        assert (store["source"], store["path"], store["synced"]) == ("kubernetes", None, True)
    pod_requests = [unquote(path) for _, path in kube.requests if path.startswith("/api/v1/pods")]
    assert pod_requests and all("fieldSelector=spec.nodeName=node-1" in p for p in pod_requests)
    assert any("watch=true" in p for p in pod_requests)  # the watch is filtered too, not only the list


async def test_the_agent_records_enrollment_on_the_pod_through_the_api(kube: KubeApiServer, tmp_path: Path) -> None:
    _seed(kube)
    async with agent_on(kube, tmp_path) as (agent, _):
        target = PodTarget("uid", "host", "mesh", "web", ("192.168.0.1",), True)
        assert await asyncio.to_thread(agent._annotate, target, "enabled")
        got = call(kube, "GET", "/api/v1/namespaces/mesh/pods/host")
        assert got["metadata"]["annotations"] == {"other.io/keep": "yes", ANNOTATION: "enabled"}
        assert await asyncio.to_thread(agent._annotate, target, None)
        got = call(kube, "GET", "/api/v1/namespaces/mesh/pods/host")
        assert got["metadata"]["annotations"] == {"other.io/keep": "yes"}  # only ours removed
        gone = PodTarget("uid2", "gone", "mesh", "web", ("10.0.0.9",), True)
        assert not await asyncio.to_thread(agent._annotate, gone, "enabled")  # a deleted pod needs nothing
        kube.down()
        try:
            with pytest.raises(AnnotationError):  # an OSError: the reconciler logs it and retries next pass
                await asyncio.to_thread(agent._annotate, target, "enabled")
        finally:
            kube.up()
