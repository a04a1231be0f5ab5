"""Control keeps watching its store whatever one file holds, and says so when a long-lived task is down:
/ready answers 503 naming the task, /debug/status lists every task with its restarts and last error."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from control.model.mesh import MeshSettings
from control.server import Control
from control.settings import ControlSettings
from tests.conftest import fail_once, wait_for
from tests.integration.control.conftest import TD, ControlProcess, free_port, namespace


def test_a_file_nested_3000_deep_is_reported_and_later_changes_still_apply(control: ControlProcess) -> None:
    objects = control.status()["objects"]
    deep = control.store / "deep.yaml"
    (control.store / ".deep.tmp").write_text("[" * 3000)
    os.replace(control.store / ".deep.tmp", deep)
    control.write("later.yaml", namespace("later", ambient=True))
    wait_for(lambda: control.status()["objects"] == objects + 1, 10, "the namespace written after the deep file")
    status = control.status()
    [error] = [e for e in status["errors"] if e["origin"] == str(deep)]
    assert error["reason"].startswith("unreadable YAML: nested deeper than 100 levels")
    assert control.metric("meshlet_control_config_errors") == 1
    assert [(t["name"], t["running"], t["restarts"]) for t in status["tasks"]] == [
        ("file-source", True, 0),
        ("advisor", True, 0),
        ("serving-cert", True, 0),
    ]
    assert control.get("/ready")[0] == 200  # a bad file is the file's error, not control's


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.asyncio
async def test_ready_names_a_task_that_is_down_and_debug_status_lists_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "store").mkdir()
    settings = ControlSettings(
        store=tmp_path / "store", state=tmp_path / "state", listen=("127.0.0.1", free_port()),
        metrics_listen=("127.0.0.1", free_port()), mesh=MeshSettings(trust_domain=TD),
    )  # fmt: skip
    control = Control(settings)  # in-process, so that its file source can be made to fail
    control.supervisor.backoff_initial = 1.0  # down for 0.5-1 s: long enough to look at
    fail_once(monkeypatch, control.source, "run", "the watch broke")
    port = settings.metrics_listen[1]

    def tasks() -> dict[str, Any]:
        return {t["name"]: t for t in json.loads(_get(port, "/debug/status")[1])["tasks"]}

    runners = await control.start()
    try:
        await _until(lambda: tasks()["file-source"]["downSince"] is not None, "the file source down")
        status, body = await asyncio.to_thread(_get, port, "/ready")
        assert (status, body) == (503, "task file-source is down, restarting: RuntimeError: the watch broke\n")
        source = (await asyncio.to_thread(tasks))["file-source"]
        assert (source["running"], source["restarts"], source["lastError"]) == (
            False, 1, "RuntimeError: the watch broke",
        )  # fmt: skip
        await _until(lambda: _get(port, "/ready")[0] == 200, "the restarted file source", timeout=3.0)
        after = await asyncio.to_thread(tasks)
        assert after["file-source"]["running"] and after["serving-cert"]["restarts"] == 0
    finally:
        await control.stop()
        for runner in runners:
            await runner.cleanup()


async def _until(condition: Any, what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
