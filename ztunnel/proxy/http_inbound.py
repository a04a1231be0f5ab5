"""Inbound HTTP: requests inside an HBONE stream (or a plaintext connection) to a served pod, one by one.

`inbound.py` hands a connection here when the destination port is handled at L7: a Service port that is HTTP,
or an AuthorizationPolicy with HTTP rules that may apply to the port (`ztunnel.l7.authz.has_http_rules`). At
connect time only what would refuse every request is refused (`authorize_connection`); then each request is
authorized with Istio's semantics (`authorize_request`): a denied one is answered 403 `RBAC: access denied` on
the same connection, an allowed one goes to the app over one connection (opened at the first allowed
request, kept alive, reopened if the app closed it), from the caller's IP as on the L4 path. A policy change
applies from the next request: each reads the index current when it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from meshlet_contracts.policy import AuthorizationPolicy
from ztunnel.l7.authz import authorize_connection, authorize_request, has_http_rules
from ztunnel.l7.exchange import CONNECT_FAILURE, Exchange, Reply, Untried, Upstream, UpstreamFailed
from ztunnel.l7.upstreams import new_upstream
from ztunnel.metrics import Peer
from ztunnel.proxy.context import ProxyContext, ServedPod, peer_of
from ztunnel.proxy.delivery import deliver
from ztunnel.proxy.http_common import BAD_PATH, DENIED, Call, begin, normalize_target, record, request_of
from ztunnel.rbac import Connection, applicable, unknown_workload
from ztunnel.rbac import Peer as Attributes
from ztunnel.state.mesh import MeshIndex

log = logging.getLogger(__name__)


class InboundHttp(Untried):
    """The router of one inbound connection into `pod`'s port (`ztunnel.l7.session.Router`)."""

    def __init__(
        self,
        ctx: ProxyContext,
        pod: ServedPod,
        conn: Connection,
        source: Peer,
        mutual_tls: bool,
        direction: str,
        on_first: Callable[[], None] | None = None,
    ) -> None:
        self.on_first = on_first
        """Called at the first request (the connection is HTTP: counted as opened then)."""
        self.ctx = ctx
        self.pod = pod
        self.conn = conn
        self.source = source
        self.mutual_tls = mutual_tls
        self.direction = direction
        self.app: Upstream | None = None
        self._denials_logged = 0
        self._peer = Attributes.of(conn)
        """The connection's attributes as rules compare them (parsed addresses), once per connection."""
        self._index: MeshIndex | None = None
        self._selected: list[AuthorizationPolicy] = []
        self._labels: Mapping[str, str] = {}
        self._destination = Peer()

    def _policies(self, index: MeshIndex) -> list[AuthorizationPolicy]:
        """The policies that apply to the pod, and its labels, worked out once per config version."""
        if index is not self._index:
            ctx, pod = self.ctx, self.pod
            workload = index.workloads.get(pod.uid)
            self._labels = workload.labels if workload is not None else {}
            policies = index.policies.authorization
            self._selected = applicable(policies, pod.namespace, self._labels, index.root_namespaces)
            self._destination = peer_of(workload, pod.identity, ctx.metrics.cluster)
            self._index = index
        return self._selected

    def admit(self, exchange: Exchange) -> Reply | None:
        if self.on_first is not None:
            self.on_first()
            self.on_first = None
        ctx, pod = self.ctx, self.pod
        call = begin(exchange, self.source)
        call.mutual_tls = self.mutual_tls
        if not normalize_target(exchange.head):
            return BAD_PATH
        index = ctx.index
        selected = self._policies(index)  # the current version: a policy change applies to the next request
        call.destination = self._destination
        if not selected:  # nothing to decide: no request attribute can change that
            ctx.metrics.decisions[(self.direction, "allow")] += 1
            call.decision = "allow"
            return None
        verdict = authorize_request(
            selected,
            pod.namespace,
            self._labels,
            self.conn,
            request_of(exchange.head),
            index.root_namespaces,
            self._peer,
        )
        ctx.metrics.decisions[(self.direction, "allow" if verdict.allowed else "deny")] += 1
        call.note(verdict)
        if verdict.allowed:
            return None
        if self._denials_logged < 1:  # once per connection: a client repeating a denied request floods nothing
            self._denials_logged += 1
            head, caller = exchange.head, self.conn.source_identity or self.conn.source_ip
            log.info("denied %s %s from %s to %s/%s: %s", head.method, head.target[:200], caller, pod.namespace,
                     pod.name, verdict.reason)  # fmt: skip
        return DENIED

    async def connect(self, exchange: Exchange, fresh: bool) -> Upstream:
        app, self.app = self.app, None
        if app is not None:
            if not fresh and not app.channel.lost and not app.channel.buffered:
                app.reused = True
                return app
            app.channel.abort()
        conn = self.conn
        upstream, channel = new_upstream(f"{conn.dest_ip}:{conn.dest_port}", None)
        try:
            side = await deliver(self.ctx, self.pod, conn.source_ip, conn.dest_ip, conn.dest_port, channel)
        except (OSError, TimeoutError) as exc:
            self.ctx.count_error(self.direction, "app_unreachable",
                                 f"{self.pod.namespace}/{self.pod.name}:{conn.dest_port}: {exc}")  # fmt: skip
            raise UpstreamFailed(Reply(503, CONNECT_FAILURE, "UF", str(exc))) from None
        channel.attach(side)
        return upstream

    def release(self, upstream: Upstream, reusable: bool) -> None:
        if reusable and not upstream.channel.lost:
            self.app = upstream
        else:
            upstream.channel.abort()

    def close(self) -> None:
        """The downstream is done: the app connection ends with it."""
        app, self.app = self.app, None
        if app is not None:
            app.channel.close()

    def done(self, exchange: Exchange) -> None:
        call = exchange.target if isinstance(exchange.target, Call) else None
        record(self.ctx.metrics, exchange, call, ("destination",), self.conn.source_ip, self.source)


def l7_reason(ctx: ProxyContext, index: MeshIndex, pod: ServedPod, port: int) -> tuple[str, bool] | None:
    """Why connections into `pod`'s `port` are handled at L7, and whether the port is declared HTTP (a Service
    says so) rather than only reached by a policy's HTTP rules; None: at L4."""
    declared = index.http_reason_for(pod.uid, port)
    if declared is not None:
        return declared, True
    workload = index.workloads.get(pod.uid)
    labels = workload.labels if workload is not None else {}
    if has_http_rules(index.policies.authorization, pod.namespace, labels, port, index.root_namespaces):
        return "an AuthorizationPolicy has HTTP rules for this port", False
    return None


def connection_allowed(ctx: ProxyContext, index: MeshIndex, pod: ServedPod, conn: Connection, direction: str) -> bool:
    """The connect-time check of an L7 connection: refused only when every request on it would be."""
    workload = index.workloads.get(pod.uid)
    policies = index.policies.authorization
    verdict = unknown_workload(workload is not None, policies, pod.namespace, index.root_namespaces) or (
        authorize_connection(policies, pod.namespace, workload.labels if workload else {}, conn, index.root_namespaces)
    )
    if not verdict.allowed:
        ctx.metrics.decisions[(direction, "deny")] += 1
        log.info("denied %s -> %s/%s:%d: %s", conn.source_identity or conn.source_ip, pod.namespace, pod.name,
                 conn.dest_port, verdict.reason)  # fmt: skip
    return verdict.allowed
