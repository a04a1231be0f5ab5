"""The agent's status API: JSON over a unix socket (mode 0600), read by `meshlet status`, the lab and tests.

`serve_status` is the agent's side; `read_status` a small blocking client for the others.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web


async def serve_status(path: Path, snapshot: Callable[[], dict[str, Any]]) -> web.AppRunner:
    from aiohttp import web  # here: the CLI reads status through `read_status` and never serves it

    """Serve `GET /v1/status` -> snapshot() on the unix socket `path`."""

    async def status(_: web.Request) -> web.Response:
        return web.json_response(snapshot())

    app = web.Application()
    app.router.add_get("/v1/status", status)
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
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", "/v1/status")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise http.client.HTTPException(f"HTTP {resp.status}")
    finally:
        conn.close()
    result: dict[str, Any] = json.loads(body)
    return result
