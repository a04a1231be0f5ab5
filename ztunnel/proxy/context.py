"""What every connection handler shares: the node's served pods, the current mesh index, identities.

One `ProxyContext` per ztunnel process. The mesh index is replaced whole by the config client; a
handler reads `ctx.index` once per connection and uses that snapshot throughout, so a config change
never lands half-way through a decision.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from meshlet_contracts.identity import IdentityError, parse_spiffe_id
from ztunnel.identity.manager import IdentityManager
from ztunnel.l7.clusters import Clusters
from ztunnel.l7.exchange import Limits
from ztunnel.l7.upstreams import UpstreamPool
from ztunnel.metrics import DEFAULT_CLUSTER, UNKNOWN, Metrics, Peer, canonical_revision, canonical_service
from ztunnel.proxy.hbone import HboneConnection
from ztunnel.proxy.limits import HboneLimits, PeerLoad
from ztunnel.proxy.pool import HbonePool
from ztunnel.proxy.relay import TcpSide, Tunnel
from ztunnel.proxy.sockets import NetnsSockets, SocketFactory
from ztunnel.state.mesh import MeshIndex, Workload
from ztunnel.tls import TlsContexts

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServedPod:
    """A pod whose listeners this process holds."""

    uid: str
    name: str
    namespace: str
    service_account: str
    identity: str
    ips: tuple[str, ...]
    netns_fd: int
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    hbone_ready: bool = False
    """15008 accepts once the pod's certificate is in hand; until then connections wait in the backlog."""
    error: str | None = None


@dataclass(slots=True)
class ProxyContext:
    node: str
    trust_domain: str
    identities: IdentityManager
    metrics: Metrics = field(default_factory=Metrics)
    index: MeshIndex = field(default_factory=MeshIndex)
    tls: TlsContexts = field(default_factory=TlsContexts)
    pool: HbonePool | None = None
    limits: HboneLimits = field(default_factory=HboneLimits)
    """What one HBONE connection and one peer may hold of this node (streams, connections, timeouts)."""
    peer_load: PeerLoad = field(default_factory=PeerLoad)
    """What each source identity and source IP holds now, checked against `limits`."""
    pods: dict[str, ServedPod] = field(default_factory=dict)
    pods_by_ip: dict[str, ServedPod] = field(default_factory=dict)
    tunnels: set[Tunnel] = field(default_factory=set)
    inbound_hbone: set[HboneConnection] = field(default_factory=set)
    """Open 15008 connections: a drain tells each GOAWAY."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Connection set-up tasks, referenced until done (asyncio keeps only weak references)."""
    draining: bool = False
    config_loaded: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once `index` holds a complete config (from control, or a verified cached copy). Until then no
    in-pod connection is forwarded: without config an enrolled destination looks like one outside the mesh,
    and passing it through would put the app's bytes on the wire in plaintext."""
    config_source: str = ""
    """Where the held config came from: "control", "cache" (the verified last good copy) or "" (none yet)."""
    config_wait: float = 3.0
    """Seconds a connection accepted before any config waits for one before it is refused."""
    http_limits: Limits = field(default_factory=Limits)
    """What the HTTP proxy allows a request (head size, header and idle timeouts)."""
    http_upstreams: UpstreamPool = field(default_factory=UpstreamPool)
    """Upstream HTTP/1.1 connections kept alive between requests (outbound L7)."""
    clusters: Clusters = field(default_factory=Clusters)
    """Per backend Service port: load balancer, outlier detection, pool limits, rate limits (TrafficPolicy)."""
    mirrors_in_flight: int = 0
    """Mirrored requests (HTTPRoute RequestMirror) not finished yet: bounded, the copies are best effort."""
    sockets: SocketFactory = field(default_factory=NetnsSockets)
    """Opens every upstream socket (in a pod's netns, marked) and reads original destinations; tests give
    one that stays on loopback."""

    def __post_init__(self) -> None:
        if self.pool is None:
            self.pool = HbonePool(self.trust_domain, self.sockets, self.metrics)
        self.clusters.counts = self.metrics.traffic  # clusters count into the exported metrics

    def spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def has_config(self) -> bool:
        """True once config is held; waits up to `config_wait` for it first (a restart's first moments)."""
        if self.config_loaded.is_set():
            return True
        try:
            async with asyncio.timeout(self.config_wait):
                await self.config_loaded.wait()
        except TimeoutError:
            return False
        return True

    def count_error(self, direction: str, reason: str, detail: object) -> None:
        """Count a failed connection and log it once (at the place it failed)."""
        self.metrics.errors[(direction, reason)] += 1
        log.info("%s connection failed (%s): %s", direction, reason, detail)


def peer_of(workload: Workload | None, principal: str | None = None, cluster: str = DEFAULT_CLUSTER) -> Peer:
    """A workload as metrics label it (Istio's naming: controller, canonical service and revision, version);
    `principal` overrides (what the certificate proved); `cluster` is this mesh's cluster id."""
    if workload is None:
        return Peer(principal=principal or UNKNOWN)
    labels = workload.labels
    name = workload.workload_name or workload.name
    return Peer(
        workload=name,
        namespace=workload.namespace,
        principal=principal or (workload.identity if workload.enrolled else UNKNOWN),
        app=labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN,
        version=labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN,
        canonical_service=canonical_service(labels, name),
        canonical_revision=canonical_revision(labels),
        cluster=cluster,
    )


def source_peer(metrics: Metrics, workload: Workload | None, identity: str | None) -> Peer:
    """The source of an inbound connection: the workload at its IP, unless the identity it authenticated with
    is not that workload's (a spoofed or reused IP): then what the identity says (namespace, service account)
    and an unknown workload, and the mismatch is counted. No workload at the IP: the identity's namespace."""
    if identity and (workload is None or workload.identity != identity):
        if workload is not None:
            metrics.identity_mismatches += 1
        try:
            spiffe = parse_spiffe_id(identity)
        except IdentityError:
            return Peer(principal=identity)
        return Peer(namespace=spiffe.namespace, principal=identity)
    return peer_of(workload, identity, metrics.cluster)


class Accepted(TcpSide):
    """A connection accepted on one of a pod's listeners: its tunnel is registered at once, and `serve`
    (the subclass's) decides where it goes while reading stays paused."""

    direction = ""

    def __init__(self, ctx: ProxyContext, pod: ServedPod) -> None:
        tunnel = Tunnel(self.direction, ctx.metrics, ctx.tunnels, "")
        super().__init__(tunnel)
        self.tunnel = tunnel
        """This connection's bookkeeping; `owner` too, unless the L7 proxy drives the connection."""
        tunnel.downstream = self
        self.ctx = ctx
        self.pod = pod

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.ctx.spawn(self.serve(), name=f"{self.direction}-{self.tunnel.id}")

    async def serve(self) -> None:
        raise NotImplementedError

    async def admitted(self, port: int, refused_ports: frozenset[int]) -> bool:
        """Checks before any decision about a connection to `port`; on failure it is counted and reset.

        ztunnel's own ports are no destination (connecting there would be accepted by this very process and
        loop through it again, two sockets a turn); and without config every destination looks unknown,
        policies are unknown, and unknown would mean passthrough in plaintext."""
        ctx, tunnel = self.ctx, self.tunnel
        if port in refused_ports:
            ctx.count_error(self.direction, "self_loop", f"{tunnel.describe}: port {port} is ztunnel's")
        elif not await ctx.has_config():
            ctx.count_error(self.direction, "no_config", f"{tunnel.describe}: no config from control yet")
        else:
            return True
        tunnel.fail()
        return False
