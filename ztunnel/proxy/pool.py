"""Pooled HBONE connections: many CONNECT streams over one mTLS connection per (source, destination).

The key is the source identity, the source pod's IP and the destination IP. The source IP belongs in
it because the destination node reads the caller's address from the TLS connection (and spoofs it
towards the app), so two pods sharing a service account must not share a connection. Concurrent
callers for a key wait on one handshake; a connection that stays without streams for `idle_timeout`
is closed with GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ztunnel.proxy.hbone import HboneConnection

log = logging.getLogger(__name__)
PoolKey = tuple[str, str, str, str]
"""(source identity, source IP, destination IP, destination identity the handshake verified)."""


class HbonePool:
    """HBONE client connections by key."""

    def __init__(self, trust_domain: str, idle_timeout: float = 30.0, handshake_timeout: float = 5.0) -> None:
        self.trust_domain = trust_domain
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.conns: dict[PoolKey, list[HboneConnection]] = {}
        self._dialing: dict[PoolKey, asyncio.Task[HboneConnection]] = {}
        self._idle: dict[int, asyncio.TimerHandle] = {}
        self.handshakes = 0

    async def get(self, key: PoolKey, dial: Callable[[], Awaitable[HboneConnection]]) -> HboneConnection:
        """A connection for `key` with room for a stream, dialing one if none has."""
        for conn in self.conns.get(key, ()):
            if conn.usable:
                self._cancel_idle(conn)
                return conn
        task = self._dialing.get(key)
        if task is None:
            task = asyncio.create_task(self._dial(key, dial), name=f"hbone-dial-{key[2]}")
            self._dialing[key] = task
            task.add_done_callback(lambda _: self._dialing.pop(key, None))
        return await asyncio.shield(task)

    async def _dial(self, key: PoolKey, dial: Callable[[], Awaitable[HboneConnection]]) -> HboneConnection:
        conn = await dial()
        self.handshakes += 1
        self.conns.setdefault(key, []).append(conn)
        conn.on_lost = lambda c: self._remove(key, c)
        conn.on_idle = lambda c: self._schedule_idle(key, c)
        return conn

    def _remove(self, key: PoolKey, conn: HboneConnection) -> None:
        self._cancel_idle(conn)
        conns = self.conns.get(key, [])
        with contextlib.suppress(ValueError):
            conns.remove(conn)
        if not conns:
            self.conns.pop(key, None)

    def _schedule_idle(self, key: PoolKey, conn: HboneConnection) -> None:
        self._cancel_idle(conn)
        loop = asyncio.get_running_loop()
        self._idle[id(conn)] = loop.call_later(self.idle_timeout, self._close_idle, key, conn)

    def _cancel_idle(self, conn: HboneConnection) -> None:
        handle = self._idle.pop(id(conn), None)
        if handle is not None:
            handle.cancel()

    def _close_idle(self, key: PoolKey, conn: HboneConnection) -> None:
        self._idle.pop(id(conn), None)
        if not conn.streams:
            log.debug("closing idle HBONE connection to %s", key[2])
            self._remove(key, conn)
            conn.close()

    def close(self) -> None:
        for conns in list(self.conns.values()):
            for conn in list(conns):
                conn.close()
        for handle in self._idle.values():
            handle.cancel()
        self._idle.clear()

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "sourceIdentity": k[0],
                "sourceIp": k[1],
                "destinationIp": k[2],
                "destinationIdentity": k[3],
                "streams": len(c.streams),
            }
            for k, conns in sorted(self.conns.items())
            for c in conns
        ]
