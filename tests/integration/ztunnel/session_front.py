"""A loopback front for HTTP session tests: each accepted connection is served by a `Session` with the given
router, and every session is cancelled when the front closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ztunnel.l7.channel import Channel
from ztunnel.l7.exchange import Limits, Router
from ztunnel.l7.session import Session
from ztunnel.proxy.relay import TcpSide


@contextlib.asynccontextmanager
async def session_front(
    router: Router, limits: Limits | None = None
) -> AsyncIterator[tuple[int, set[asyncio.Task[None]]]]:
    """Yields (port, the sessions' tasks)."""
    tasks: set[asyncio.Task[None]] = set()

    class Downstream(TcpSide):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            channel = self.owner
            assert isinstance(channel, Channel)
            channel.attach(self)
            task = asyncio.get_running_loop().create_task(self._serve(channel))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def _serve(self, channel: Channel) -> None:
            await Session(channel, router, limits or Limits()).run()

    server = await asyncio.get_running_loop().create_server(lambda: Downstream(Channel()), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], tasks
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
