"""The config client: connects to control with the node credential, applies what it sends, acks or nacks.

A node proves itself in one of two ways: a provisioned node credential (a client certificate, the local lab),
or on Kubernetes its pod's projected ServiceAccount token, sent as `Authorization: Bearer` on every request
and read from disk each time (the kubelet rotates the file); either way control is verified with the mesh root.

It reconnects with exponential backoff and full jitter (so a restarted control is not hit by every node
at once), and keeps the last good state through any outage: the data path is never left without config
because control is away. Two caps: while control is away (connection refused or reset, a timeout, control
saying it is stopping) the wait never exceeds `away_max` (0.8 s), so a control that comes back is found,
and its snapshot applied, within about a second; a refusal with an answer (401, a certificate control does not
take, a stream that control hangs up at once) will not change that soon and backs off to `backoff_max`.
A refused connect costs a control that is away nothing, and one that is starting opens its port only once it
can serve. `on_update` is called with every newly accepted state, on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from meshlet_contracts import wire
from meshlet_contracts.backoff import Backoff
from meshlet_contracts.mesh_config import MESH_KEY, mesh_item
from ztunnel.config import heap
from ztunnel.config.state import ConfigRejected, ConfigState, Validator, apply

log = logging.getLogger(__name__)
OFF_LOOP_BYTES = 256 * 1024
"""Config messages this big or bigger are decoded and applied off the event loop (a one-pod delta is ~1 KB)."""
NACKED = (ConfigRejected, ValueError, TypeError, KeyError, AttributeError)
"""What applying a message may raise that is that message's fault: nacked, the last good state kept (the config
fuzzer, tests/unit/fuzz, checks that a hostile message raises nothing else)."""
STABLE_SESSION = 5.0
"""Seconds a session must last before the backoff starts over: a control that accepts and hangs up at
once must not be hammered by every node."""
AWAY_MAX = 0.8
"""Longest wait between tries while control is away: with full jitter a node tries about every 0.4 s, and the
first try after control's return comes within 0.8 s."""


def control_away(exc: BaseException) -> bool:
    """Whether a failure says control is not there (yet): nothing answered, or control said it is stopping.
    A TLS failure or an HTTP refusal is an answer: retrying sooner would not change it."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        return False
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return exc.status in (502, 503, 504)  # stopping, or a proxy in front without a control behind it
    return isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | TimeoutError)


@dataclass(frozen=True, slots=True)
class NodeCredential:
    """How this node proves itself to control: a provisioned key and certificate chain, or a ServiceAccount
    token file; and the mesh root, to verify control."""

    key: Path | None
    cert: Path | None
    root: Path
    token: Path | None = None

    @classmethod
    def in_dir(cls, directory: Path) -> NodeCredential:
        return cls(directory / "node-key.pem", directory / "node-cert.pem", directory / "root-cert.pem")

    @classmethod
    def from_token(cls, token: Path, root: Path) -> NodeCredential:
        return cls(None, None, root, token)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.root))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if self.cert is not None and self.key is not None:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def headers(self) -> dict[str, str]:
        """What each request to control carries: the token as it is on disk now (OSError if it is not there)."""
        if self.token is None:
            return {}
        token = self.token.read_text().strip()
        if not token:
            raise OSError(f"{self.token} is empty")
        return {"Authorization": f"Bearer {token}"}


class ConfigClient:
    """Holds the current `ConfigState` and keeps it in step with control."""

    def __init__(
        self,
        url: str,
        credential: NodeCredential,
        on_update: Callable[[ConfigState], None] | None = None,
        validate: Validator | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        away_max: float = AWAY_MAX,
    ) -> None:
        self.url = url.rstrip("/") + wire.CONFIG_PATH
        self.credential = credential
        self.on_update = on_update
        self.validate = validate
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.away_max = min(away_max, backoff_max)
        self.state = ConfigState()
        self.connected = False
        self.last_error: str | None = None
        self.connects = 0
        self.updated_at: float | None = None
        """Wall-clock time the held state was accepted (for the config's age in `meshlet status`)."""
        self._stopping = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._failures = 0
        """Tries that failed since the last connect: the first (of each kind) is a warning, the rest debug."""
        self._failure_kind = ""
        self._going_away = False
        """Control closed the last stream saying it is stopping (1001): look for the next one at once."""
        self.freezer = heap.Freezer()

    async def run(self) -> None:
        """Until `stop`: connect, follow the stream, and after any failure wait and reconnect."""
        away = Backoff(self.backoff_initial, self.away_max)
        refused = Backoff(self.backoff_initial, self.backoff_max)
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            backoff = refused
            try:
                self._going_away = False
                await self._session()
                if self._going_away:
                    backoff = away
            except (aiohttp.ClientError, OSError, TimeoutError, wire.WireError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if control_away(exc):
                    backoff = away
                self._failures += 1
                kind, self._failure_kind = self._failure_kind, type(exc).__name__
                if self._failures == 1 or kind != self._failure_kind:  # once per outage and kind, not per try
                    log.warning("config stream to %s failed: %s; retrying", self.url, error)
                else:
                    log.debug("config stream to %s failed again (try %d): %s", self.url, self._failures, error)
                self.last_error = error
            finally:
                self.connected = False
            if loop.time() - started > STABLE_SESSION:
                away.reset()  # only a session that lasted starts the waits over
                refused.reset()
            await backoff.sleep(self._stopping)  # with full jitter, but wake at once on stop

    async def stop(self) -> None:
        """End `run` cleanly: close the stream (control sees a normal close) and stop reconnecting."""
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()

    async def _session(self) -> None:
        ctx = self.credential.client_context()
        timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_connect=5.0)
        # Python 3.11's asyncio can leave the TCP transport under a TLS connection open when the peer
        # does not finish the TLS shutdown; aiohttp then aborts it for us (cleanup_closed).
        connector = aiohttp.TCPConnector(ssl=ctx, enable_cleanup_closed=True)
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            session.ws_connect(
                self.url, ssl=ctx, headers=self.credential.headers(), heartbeat=15.0, max_msg_size=64 << 20
            ) as ws,
        ):
            if self._stopping.is_set():
                return  # stop() came while we were connecting
            self._ws = ws
            self.connected = True
            self.connects += 1
            self.last_error = None
            failed, self._failures = self._failures, 0
            log.info("config stream connected to %s%s", self.url, f" after {failed} failed tries" if failed else "")
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    # The frame's own code: ws.close_code says 1006 when control closed the socket right after.
                    self._going_away = msg.data == aiohttp.WSCloseCode.GOING_AWAY
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    break
                if msg.type == aiohttp.WSMsgType.ERROR:
                    raise aiohttp.ClientConnectionError(f"config stream broke: {ws.exception()}")
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                # A big message (a snapshot of 10,000 workloads converts for ~0.3 s) is decoded and applied in a
                # worker thread, whose GIL share leaves the loop carrying traffic its turns.
                big = len(msg.data) >= OFF_LOOP_BYTES
                # ... with the collector paused: its full passes would stop the loop (heap.py).
                with self.freezer.converting() if big else contextlib.nullcontext():
                    message = await asyncio.to_thread(wire.decode, msg.data, True) if big else wire.decode(msg.data)
                    try:
                        if big:
                            new = await asyncio.to_thread(apply, self.state, message, self.validate)
                        else:
                            new = apply(self.state, message, self.validate)
                    except NACKED as exc:
                        # Whatever is wrong with a message concerns that version only: nack it, keep going.
                        log.error("rejected config version %s: %s", message["version"], exc)
                        # The last good state stays; control answers a nack with a snapshot at its next version.
                        nack = {"type": "nack", "version": message["version"], "error": str(exc)}
                        await ws.send_str(wire.encode(nack))
                        continue
                self.state = new
                self.updated_at = time.time()
                ack: dict[str, object] = {"type": "ack", "version": new.version}
                if new.root_namespaces is not None:  # what it now applies: control tells old ztunnels apart by it
                    ack[MESH_KEY] = mesh_item(new.root_namespaces)
                await ws.send_str(wire.encode(ack))
                if self.on_update is not None:
                    try:
                        self.on_update(new)
                    except Exception:
                        log.exception("applying config version %s failed", new.version)
            self._ws = None
            if ws.close_code is not None and not self._stopping.is_set():
                why = "stopping" if self._going_away else f"code {ws.close_code}"
                log.info("config stream closed by control (%s)", why)
