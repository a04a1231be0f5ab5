"""ztunnel's long-lived tasks are supervised: one that fails is restarted, and readiness (15021) names it
while it is down; on shutdown the tasks end without being taken for failures.

ztunnel runs in-process (so that a task can be made to fail) with a real node credential, its admin,
metrics and readiness listeners on loopback, and no control or agent to talk to.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from control.ca import CertificateAuthority
from control.nodes import NodeRegistry
from tests.conftest import fail_once
from ztunnel.main import Ztunnel, parser

pytestmark = pytest.mark.asyncio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ready(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/ready", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def until_ready_says(port: int, condition: object, what: str, timeout: float = 5.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, body = await asyncio.to_thread(ready, port)
            if condition(body):  # type: ignore[operator]
                return body
        except OSError:
            pass  # not listening yet
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_failed_task_is_named_by_readiness_until_it_is_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "state", "cluster.local")
    NodeRegistry(tmp_path / "state", ca).provision("node1", tmp_path / "cred")
    readiness = free_port()
    args = parser().parse_args(
        ["--node", "node1", "--control", f"https://127.0.0.1:{free_port()}", "--credentials", str(tmp_path / "cred"),
         "--zds-socket", str(tmp_path / "zds.sock"), "--admin", f"127.0.0.1:{free_port()}",
         "--metrics", f"127.0.0.1:{free_port()}", "--readiness", f"127.0.0.1:{readiness}",
         "--config-cache", str(tmp_path / "config.json"), "--drain-timeout", "1"]
    )  # fmt: skip
    zt = Ztunnel(args)
    zt.supervisor.backoff_initial = 1.0  # down for 0.5-1 s: long enough to look at
    fail_once(monkeypatch, zt.ctx.identities, "run", "the renewals broke")
    task = asyncio.create_task(zt.run())
    try:
        body = await until_ready_says(readiness, lambda b: "task identities" in b, "the failed task in readiness")
        assert "task identities is down, restarting (RuntimeError: the renewals broke)" in body
        await until_ready_says(readiness, lambda b: "task identities" not in b, "the restarted task", timeout=3.0)
        assert not zt.supervisor.down() and zt.supervisor.states["identities"].restarts == 1
    finally:
        caplog.clear()
        zt.stop()
        await asyncio.wait_for(task, 10)
    # A clean shutdown: the clients' own ends are not taken for failures (no "restarting" logged).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not any(s.running for s in zt.supervisor.states.values())
