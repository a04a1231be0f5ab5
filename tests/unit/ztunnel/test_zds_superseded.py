"""ztunnel's side of the ZDS handover: it says who it is, and once superseded it drains and never comes back.

A scripted agent on a real SOCK_SEQPACKET socket; the client is ztunnel's own `ZdsClient`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from meshlet_contracts import zds as protocol
from ztunnel.inpod.client import ZdsClient
from ztunnel.inpod.manager import WorkloadManager

pytestmark = pytest.mark.asyncio


async def exchange(conn: socket.socket, message: dict[str, object]) -> dict[str, object]:
    protocol.send(conn, message)
    async with asyncio.timeout(5):
        got = await protocol.recv_async(conn)
    assert got is not None
    return got[0]


async def test_the_hello_ack_names_the_process_and_superseded_ends_the_client_for_good(tmp_path: Path) -> None:
    path = tmp_path / "ztunnel.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    listener.listen(4)
    listener.setblocking(False)
    client = ZdsClient(path, WorkloadManager(), backoff_max=0.1)
    told: list[bool] = []
    client.on_superseded = lambda: told.append(True)
    run = asyncio.create_task(client.run())
    try:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        with conn:
            ack = await exchange(conn, {"type": "hello", "version": protocol.VERSION})
            who = protocol.ZtunnelId.from_ack(ack)
            assert who is not None and who.pid == os.getpid() and who == client.identity
            assert (await exchange(conn, {"type": "superseded", "by": 4242}))["error"] is None
            await asyncio.wait_for(run, 5)  # the client stopped: it does not reconnect to be refused again
        assert told == [True] and client.superseded_by == 4242 and not client.connected
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came back
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        listener.close()
