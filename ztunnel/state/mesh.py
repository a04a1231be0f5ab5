"""Workloads and services as the data path reads them, indexed by uid, IP and VIP.

`MeshIndex.from_config` converts one accepted `ConfigState` into domain objects once (`converting`: each item
checked against its definition on the way, what the previous version converted reused); it is also the config
client's validator, so a version whose items cannot be converted is nacked and the last good index stays in
force. The data path holds an index and never sees one half-built.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshlet_contracts.config_items import ItemError, ServiceItem, WorkloadItem
from meshlet_contracts.mesh_config import ROOT_NAMESPACE
from meshlet_contracts.protocols import http_ports
from meshlet_contracts.routes import HTTPRoute
from meshlet_contracts.traffic import TrafficPolicy
from ztunnel.config.state import ConfigRejected, ConfigState
from ztunnel.state.policy import PolicySet

if TYPE_CHECKING:
    from ztunnel.state.converting import Conversion


@dataclass(frozen=True, slots=True)
class Workload:
    """One pod of the mesh (enrolled or not), by the fields the proxy routes and authorizes on."""

    uid: str
    name: str
    namespace: str
    node: str
    service_account: str
    identity: str
    """Its SPIFFE ID: what its certificate carries and what a client must see on its 15008."""
    ips: tuple[str, ...]
    labels: Mapping[str, str]
    enrolled: bool
    ready: bool
    workload_name: str = ""
    """Its controller's name as Istio names workloads (a Deployment, StatefulSet, ...); "" reads as `name`."""

    @classmethod
    def from_wire(cls, item: WorkloadItem) -> Workload:
        """From an item checked by `parse_workload`."""
        return cls(
            uid=item["uid"],
            name=item["name"],
            namespace=item["namespace"],
            node=item.get("node", ""),
            service_account=item["serviceAccount"],
            identity=item["identity"],
            ips=tuple(item["ips"]),
            labels=dict(item.get("labels", {})),
            enrolled=item["enrolled"],
            ready=item.get("ready", True),
            workload_name=item.get("workloadName") or item["name"],
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    workload_uid: str
    ip: str
    ports: Mapping[int, int]
    """Service port -> the pod's port."""
    ready: bool


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    hostname: str
    vips: tuple[str, ...]
    ports: tuple[int, ...]
    endpoints: tuple[Endpoint, ...]
    http_ports: Mapping[int, str] = field(default_factory=dict)
    """Service port -> why it is HTTP (`port name http-web`), for the ports that are; the others are TCP."""

    @classmethod
    def from_wire(cls, item: ServiceItem) -> Service:
        """From an item checked by `parse_service`."""
        return cls(
            name=item["name"],
            namespace=item["namespace"],
            hostname=item.get("hostname", ""),
            vips=tuple(item["vips"]),
            ports=tuple(p["port"] for p in item["ports"]),
            endpoints=tuple(
                Endpoint(
                    workload_uid=e["workloadUid"],
                    ip=e["ip"],
                    ports={int(k): v for k, v in e["ports"].items()},
                    ready=e.get("ready", True),
                )
                for e in item["endpoints"]
            ),
            http_ports=http_ports(item["ports"]),
        )


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one outbound connection goes: an address, and the workload behind it if the mesh knows one."""

    ip: str
    port: int
    workload: Workload | None
    service: Service | None = None


class NoHealthyEndpoint(LookupError):
    """A service VIP and port with no ready endpoint: the connection is refused, as kube-proxy would."""


@dataclass(frozen=True, slots=True)
class MeshIndex:
    """One config version, converted and indexed."""

    version: int = 0
    workloads: Mapping[str, Workload] = field(default_factory=dict)
    by_ip: Mapping[str, Workload] = field(default_factory=dict)
    services: Mapping[str, Service] = field(default_factory=dict)
    """`namespace/name` -> service."""
    by_vip: Mapping[str, Service] = field(default_factory=dict)
    policies: PolicySet = field(default_factory=PolicySet)
    root_namespaces: tuple[str, ...] = (ROOT_NAMESPACE,)
    """Whose policies govern every workload: as control named them, else the ztunnel's `--root-namespace`."""
    http_targets: Mapping[tuple[str, int], str] = field(default_factory=dict)
    """(workload uid, its port) -> why connections into that port are HTTP: a service it backs says so."""
    traffic: Mapping[tuple[str, int | None], TrafficPolicy] = field(default_factory=dict)
    """(service `namespace/name`, port or None for every port) -> the TrafficPolicy in force there."""
    routes: Mapping[str, tuple[tuple[int | None, HTTPRoute], ...]] = field(default_factory=dict)
    """Service `namespace/name` -> the HTTPRoutes attached to it (accepted by control), each with the port it
    attaches to (None: every port)."""
    # Round-robin cursors per service: the only mutable part, and only ever advanced.
    _cursors: dict[str, itertools.count[int]] = field(default_factory=dict)
    _conversion: Conversion | None = None
    """What the next version's conversion may reuse (`converting.Conversion`)."""

    @classmethod
    def from_config(
        cls, state: ConfigState, previous: MeshIndex | None = None, default_roots: tuple[str, ...] = (ROOT_NAMESPACE,)
    ) -> MeshIndex:
        """Convert `state`, reusing what `previous` converted from the very same items; raises ConfigRejected
        naming the item that could not be converted. `default_roots` serve when control named no root namespaces."""
        from ztunnel.state.converting import convert, http_routes, traffic_policies  # it imports this module

        conversion = convert(state, previous._conversion if previous is not None else None)
        try:
            policies = PolicySet.from_wire(
                state.items("authorization_policies").values(), state.items("peer_authentications").values()
            )
        except ItemError as exc:
            raise ConfigRejected(str(exc)) from None
        return cls(
            state.version,
            conversion.workloads,
            conversion.by_ip,
            conversion.services,
            conversion.by_vip,
            policies,
            state.root_namespaces or default_roots,
            http_targets=conversion.http_targets,
            traffic=traffic_policies(state),
            routes=http_routes(state),
            _conversion=conversion,
        )

    def __post_init__(self) -> None:
        # A string here would be taken apart into letters by every decision: no root policy would apply.
        roots: object = self.root_namespaces  # as given at run time, whatever the annotation says
        if isinstance(roots, str):
            raise TypeError("root_namespaces is a tuple of namespaces, not a string")

    def traffic_policy(self, service: str, port: int) -> TrafficPolicy | None:
        """The TrafficPolicy for `port` of `service` (`namespace/name`): one naming that port wins over one for
        the whole Service, as Istio's port-level settings do."""
        return self.traffic.get((service, port)) or self.traffic.get((service, None))

    def routes_for(self, service: str, port: int) -> tuple[HTTPRoute, ...]:
        """The HTTPRoutes for requests to `port` of `service` (`namespace/name`), for `ztunnel.l7.routing.select`."""
        return tuple(route for attached, route in self.routes.get(service, ()) if attached in (None, port))

    def http_reason_for(self, workload_uid: str, target_port: int) -> str | None:
        """Why a connection into `target_port` of that workload is HTTP (`service shop/web port 80: port name
        http`), or None: no service the workload is an endpoint of maps an HTTP port to that port."""
        return self.http_targets.get((workload_uid, target_port))

    def resolve(self, ip: str, port: int) -> Upstream:
        """The upstream of a connection to `ip:port`: a VIP picks an endpoint by round robin."""
        service = self.by_vip.get(ip)
        if service is None:
            return Upstream(ip, port, self.by_ip.get(ip))
        candidates = [e for e in service.endpoints if e.ready and port in e.ports]
        if not candidates:
            raise NoHealthyEndpoint(f"service {service.namespace}/{service.name} has no ready endpoint for port {port}")
        key = f"{service.namespace}/{service.name}"
        cursor = self._cursors.get(key)
        if cursor is None:
            cursor = self._cursors.setdefault(key, itertools.count())
        endpoint = candidates[next(cursor) % len(candidates)]
        return Upstream(endpoint.ip, endpoint.ports[port], self.workloads.get(endpoint.workload_uid), service)
