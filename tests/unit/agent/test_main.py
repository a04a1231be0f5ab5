"""The agent process keeps acting on the store: after a file the parser gives up on, after a failure of its
store watch (restarted, and reported by `meshlet status` meanwhile), and for a change that arrives while a
reconcile pass runs (a pass of its own at once, not at the next resync).

The agent runs in-process on a temporary store and sockets; only the reconciler is a stand-in (the real one
enters every network namespace of the machine), recording which pods each pass was asked to enroll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.enrolling import PodTarget
from agent.main import Agent, parser
from control.sources.files import FileSource
from meshlet.cli.endpoints import NodeEndpoints
from meshlet.cli.status import gather
from tests.conftest import fail_once, until

pytestmark = pytest.mark.asyncio
AMBIENT = {"meshlet.io/dataplane-mode": "ambient"}


class RecordingReconciler:
    """Records each pass's targets; a pass waits while `hold` is clear."""

    def __init__(self) -> None:
        self.passes: list[dict[str, PodTarget]] = []
        self.pods: dict[str, Any] = {}
        self.hold = asyncio.Event()
        self.hold.set()

    async def sync(self, targets: dict[str, PodTarget]) -> None:
        self.passes.append(targets)
        await self.hold.wait()

    def replay(self) -> list[tuple[str, Any, int]]:
        return []

    def enrolled(self, name: str) -> bool:
        """Whether the latest pass was asked to enroll pod `name`."""
        return bool(self.passes) and any(t.name == name and t.enrolled for t in self.passes[-1].values())


def write(store: Path, name: str, text: str) -> None:
    """Replace a store file atomically, as the lab and `meshlet label` do."""
    tmp = store / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, store / name)


def namespace(ambient: bool) -> str:
    return yaml.safe_dump({"kind": "Namespace", "metadata": {"name": "plain", "labels": AMBIENT if ambient else {}}})


POD = yaml.safe_dump(
    {
        "kind": "Pod",
        "metadata": {"name": "web-1b", "namespace": "plain"},
        "spec": {"nodeName": "node1"},
        "status": {"phase": "Running", "podIP": "10.1.0.3"},
    }
)


def new_agent(tmp_path: Path, resync: float = 30.0) -> tuple[Agent, RecordingReconciler]:
    store = tmp_path / "store"
    store.mkdir()
    write(store, "namespace.yaml", namespace(ambient=False))
    write(store, "pod.yaml", POD)
    args = parser().parse_args(
        ["--node", "node1", "--store", str(store), "--zds-socket", str(tmp_path / "zds.sock"),
         "--status-socket", str(tmp_path / "agent.sock"), "--redirect", "iptables", "--probe-ip", "10.1.0.1",
         "--resync", str(resync)]
    )  # fmt: skip
    agent = Agent(args)
    agent.source = FileSource(store, interval=0.02)
    reconciler = RecordingReconciler()
    agent.reconciler = reconciler  # type: ignore[assignment]
    return agent, reconciler


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[None]:
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: agent.store.synced or task.done(), "the agent to load its store")
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_agent_keeps_watching_the_store_after_a_file_nested_3000_deep(tmp_path: Path) -> None:
    agent, reconciler = new_agent(tmp_path)
    store = Path(agent.args.store)
    async with running(agent):
        await until(lambda: bool(reconciler.passes), "the first pass")
        assert not reconciler.enrolled("web-1b")
        write(store, "deep.yaml", "[" * 3000)
        write(store, "namespace.yaml", namespace(ambient=True))  # labelling the namespace enrolls its pods
        await until(lambda: reconciler.enrolled("web-1b"), "web-1b enrolled after the label")
        snapshot = agent.snapshot()
        assert any("deep.yaml: unreadable YAML: nested deeper than" in e for e in snapshot["store"]["errors"])
        assert {t["name"] for t in snapshot["tasks"]} >= {"store", "reconcile"}
        assert all(t["running"] and t["restarts"] == 0 for t in snapshot["tasks"])


async def test_a_store_change_during_a_reconcile_pass_gets_a_pass_at_once_not_at_the_next_resync(
    tmp_path: Path,
) -> None:
    agent, reconciler = new_agent(tmp_path, resync=30.0)
    reconciler.hold.clear()  # the first pass is still running when the change arrives
    async with running(agent):
        await until(lambda: len(reconciler.passes) == 1, "the first pass to start")
        version = agent.store.version
        write(Path(agent.args.store), "namespace.yaml", namespace(ambient=True))
        await until(lambda: agent.store.version > version, "the store to take the change")
        reconciler.hold.set()
        await until(lambda: reconciler.enrolled("web-1b"), "a pass with web-1b enrolled", timeout=3.0)


async def test_a_failed_store_watch_is_restarted_and_meshlet_status_reports_it_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, reconciler = new_agent(tmp_path)
    agent.supervisor.backoff_initial = 1.0  # down for 0.5-1 s: long enough to look at
    fail_once(monkeypatch, agent.source, "run", "the watch broke")
    with socket.socket() as no_ztunnel:  # bound, never listening: ztunnel's admin refuses
        no_ztunnel.bind(("127.0.0.1", 0))
        ep = NodeEndpoints(None, Path(agent.args.status_socket), no_ztunnel.getsockname())
        async with running(agent):
            await until(lambda: any(t["downSince"] for t in agent.snapshot()["tasks"]), "the store task down")
            report = await asyncio.to_thread(gather, ep)
            assert not report["healthy"] and not report["agent"]["ok"]
            assert any(p.startswith("the agent's store task is down (RuntimeError: the watch broke)")
                       for p in report["problems"])  # fmt: skip
            await until(lambda: not any(t["downSince"] for t in agent.snapshot()["tasks"]), "the restart", 3.0)
            write(Path(agent.args.store), "namespace.yaml", namespace(ambient=True))
            await until(lambda: reconciler.enrolled("web-1b"), "web-1b enrolled by the restarted watch")
            report = await asyncio.to_thread(gather, ep)
            assert not any("task is down" in p for p in report["problems"]) and report["agent"]["ok"]
