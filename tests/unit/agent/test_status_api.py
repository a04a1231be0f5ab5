"""The agent's status socket: its status, and its log level changed at runtime (`meshlet log-level`), a level
that is not one refused with the levels there are; the blocking client the CLI uses, on a real unix socket."""

from __future__ import annotations

import asyncio
import http.client
import logging
from pathlib import Path

import pytest

from agent.status import read_status, serve_status, set_log_level

pytestmark = pytest.mark.asyncio


async def test_the_log_level_changes_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    runner = await serve_status(path, lambda: {"node": "node1"})
    root = logging.getLogger()
    was = root.level
    try:
        assert path.stat().st_mode & 0o777 == 0o600  # the node's root only
        assert await asyncio.to_thread(read_status, path) == {"node": "node1"}
        assert await asyncio.to_thread(set_log_level, path, "DEBUG") == "debug"
        assert root.getEffectiveLevel() == logging.DEBUG
        with pytest.raises(http.client.HTTPException, match="expected one of debug, info, warning, error"):
            await asyncio.to_thread(set_log_level, path, "loud")
        assert await asyncio.to_thread(set_log_level, path, "warning") == "warning"
    finally:
        root.setLevel(was)
        await runner.cleanup()
