"""Pooled HBONE connections: many CONNECT streams over one mTLS connection per (source, destination).

The key is the source identity, the source pod's IP and the destination IP. The source IP belongs in
it because the destination node reads the caller's address from the TLS connection (and spoofs it
towards the app), so two pods sharing a service account must not share a connection. Concurrent
callers for a key wait on one handshake; a connection that stays without streams for `idle_timeout`
is closed with GOAWAY.

A key may need several connections: the peer takes a limited number of concurrent streams on each
(SETTINGS_MAX_CONCURRENT_STREAMS, 100 by default). Room is checked when `get` returns, never before a
wait, since callers that waited together resume one after another and each takes a stream; one that
finds the connection full looks again (another connection, or a new dial). A new connection carries
one stream until the peer's SETTINGS say how many it takes; other callers wait for them (one round
trip) rather than open streams the peer may refuse.

The pool dials its connections itself, through the context's socket factory: from the source pod's netns
to the destination's 15008, with the source pod's certificate; the server must prove the destination
identity the key names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from meshlet_contracts.ports import HBONE
from ztunnel.metrics import Metrics
from ztunnel.proxy.hbone import HboneConnection
from ztunnel.proxy.sockets import CONNECT_TIMEOUT, NetnsSockets, SocketFactory, tunnel_liveness
from ztunnel.tls import PeerIdentityError, peer_identity

log = logging.getLogger(__name__)
PoolKey = tuple[str, str, str, str, str]
"""(source identity, source IP, destination IP, destination identity the handshake verified, destination workload
uid). The uid keeps a pod recreated at the same IP with the same identity (a new uid, a new netns) off the old
pod's connections, which its netns took down without a FIN."""


class NoCapacityError(ConnectionError):
    """A connection was dialed for a caller but had no room for its stream (the peer refused it at once)."""


class HbonePool:
    """HBONE client connections by key."""

    def __init__(
        self,
        trust_domain: str,
        sockets: SocketFactory | None = None,
        metrics: Metrics | None = None,
        idle_timeout: float = 30.0,
        handshake_timeout: float = 5.0,
    ) -> None:
        self.trust_domain = trust_domain
        self.sockets: SocketFactory = sockets if sockets is not None else NetnsSockets()
        self.metrics = metrics
        """Where the connections' HTTP/2 failures are counted."""
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.conns: dict[PoolKey, list[HboneConnection]] = {}
        self._dialing: dict[PoolKey, asyncio.Task[HboneConnection]] = {}
        self._idle: dict[int, asyncio.TimerHandle] = {}
        self.handshakes = 0

    async def get(self, key: PoolKey, netns_fd: int, tls: ssl.SSLContext) -> HboneConnection:
        """A connection for `key` with room for one more stream now, dialing one (from the netns of `netns_fd`,
        with the client context `tls`) if none has.

        Open the stream before awaiting anything else: the room is only known to be there at this moment.
        """
        while True:
            unsettled: HboneConnection | None = None
            for conn in self.conns.get(key, ()):
                if not conn.usable:
                    continue
                if conn.settings_known or not conn.streams:
                    self._cancel_idle(conn)
                    return conn
                unsettled = conn
            if unsettled is not None:
                async with asyncio.timeout(self.handshake_timeout):
                    await unsettled.settings_received()
                continue
            task = self._dialing.get(key)
            if task is None or task.done():  # a finished dial not yet dropped holds nothing more to wait for
                task = asyncio.create_task(self._dial(key, netns_fd, tls), name=f"hbone-dial-{key[2]}")
                self._dialing[key] = task
                task.add_done_callback(lambda t: self._dial_done(key, t))
            conn = await asyncio.shield(task)
            if not conn.usable and not conn.streams:
                # Refused as soon as it was up (lost, GOAWAY): dialing again would most likely go the same way.
                raise NoCapacityError(f"the new HBONE connection to {key[2]} takes no streams")

    def _dial_done(self, key: PoolKey, task: asyncio.Task[HboneConnection]) -> None:
        if self._dialing.get(key) is task:
            del self._dialing[key]

    async def _dial(self, key: PoolKey, netns_fd: int, tls: ssl.SSLContext) -> HboneConnection:
        conn = await self._open(key, netns_fd, tls)
        self.handshakes += 1
        self.conns.setdefault(key, []).append(conn)
        conn.on_lost = lambda c: self._remove(key, c)
        conn.on_idle = lambda c: self._schedule_idle(key, c)
        return conn

    async def _open(self, key: PoolKey, netns_fd: int, tls: ssl.SSLContext) -> HboneConnection:
        """A new mTLS connection to the destination's 15008 that proved the identity `key` names."""
        sock = await self.sockets.connect(netns_fd, key[2], HBONE)
        tunnel_liveness(sock)
        transport, conn = await asyncio.get_running_loop().create_connection(
            lambda: HboneConnection(client=True, metrics=self.metrics),  # its HTTP/2 failures are counted
            sock=sock,
            ssl=tls,
            server_hostname="",
            ssl_handshake_timeout=CONNECT_TIMEOUT,
        )
        try:
            conn.peer_identity = peer_identity(transport.get_extra_info("ssl_object"), self.trust_domain)
            if conn.peer_identity != key[3]:
                raise PeerIdentityError(f"{key[2]}:{HBONE} is {conn.peer_identity}, expected {key[3]}")
        except BaseException:
            transport.abort()
            raise
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

    def retire(self, keep: Callable[[PoolKey], bool]) -> int:
        """Take out of the pool every connection whose key `keep` refuses (its destination IP is no workload of
        that identity any more): a pod deleted with its netns never says goodbye, and a new pod given its IP
        must not be sent streams over the dead one's connection. Idle ones close now, busy ones after their
        last stream. Returns how many went."""
        retired = 0
        for key, conns in list(self.conns.items()):
            if keep(key):
                continue
            for conn in list(conns):
                self._remove(key, conn)
                conn.retire()
                retired += 1
        return retired

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
                "destinationUid": k[4],
                "streams": len(c.streams),
            }
            for k, conns in sorted(self.conns.items())
            for c in conns
        ]
