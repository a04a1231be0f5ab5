"""The agent's status API: JSON over a unix socket (mode 0600), read by `meshlet status` and tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web


async def serve_status(path: Path, snapshot: Callable[[], dict[str, Any]]) -> web.AppRunner:
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
