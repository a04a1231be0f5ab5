"""The agent's status API: JSON over a unix socket (mode 0600), read by `meshlet status`, the lab and tests.

`serve_status` is the agent's side; `read_status` a small blocking client for the others.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from meshlet_contracts import log_levels

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)


async def serve_status(path: Path, snapshot: Callable[[], dict[str, Any]]) -> web.AppRunner:
    from aiohttp import web  # here: the CLI reads status through `read_status` and never serves it

    """Serve `GET /v1/status` -> snapshot(), and `POST /v1/logging?level=` (log_levels.py), on the unix socket
    `path`."""

    async def status(_: web.Request) -> web.Response:
        return web.json_response(snapshot())

    async def logging_(request: web.Request) -> web.Response:
        level = request.query.get("level")
        if level is not None:
            try:
                log_levels.set_level(level)
            except log_levels.LevelError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            log.warning("log level set to %s through the status socket", log_levels.current())
        return web.json_response({"level": log_levels.current()})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/logging", logging_)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()  # left by an earlier agent
    site = web.UnixSite(runner, str(path))
    await site.start()
    os.chmod(path, 0o600)
    return runner


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("agent", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(str(self.path))
        except OSError:
            s.close()
            raise
        self.sock = s


def read_status(path: Path, timeout: float = 3.0) -> dict[str, Any]:
    """GET /v1/status from the agent at `path` (OSError or http.client.HTTPException when it cannot)."""
    return _call(path, "GET", "/v1/status", timeout)


def set_log_level(path: Path, level: str, timeout: float = 3.0) -> str:
    """The agent's log level set to `level`; what it says it is now. A level it refuses: HTTPException naming why."""
    return str(_call(path, "POST", f"/v1/logging?level={quote(level)}", timeout)["level"])


def _call(path: Path, method: str, target: str, timeout: float) -> dict[str, Any]:
    conn = _UnixConnection(path, timeout)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    result: dict[str, Any] = json.loads(body) if body else {}
    if resp.status != 200:
        raise http.client.HTTPException(str(result.get("error") or f"HTTP {resp.status}"))
    return result
