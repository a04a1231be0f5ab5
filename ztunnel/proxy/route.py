"""Where a connection captured in a pod (its 15001) goes: a pure decision on the mesh index.

Given the mesh index, the pods this process serves and the connection's original destination, the
answer is one of:
- `Local`: an enrolled workload this very process serves: authorize, then connect to its app directly
  (same node: no TLS needed, policy never skipped);
- `Hbone`: an enrolled workload elsewhere: a CONNECT stream to its node's 15008, whose server must prove
  the workload's identity;
- `Passthrough`: anything outside the mesh: plaintext, as if there were no mesh;
- `Refuse`: no healthy endpoint behind a service VIP, or a ztunnel port as destination (a self-loop: it
  would be accepted by ztunnel itself and dialed again without end). `reason` is the metric's label.
A service VIP resolves to one endpoint by round robin (the index's cursor is the one thing that moves).
No sockets, no waiting: `Outbound.serve` acts on the answer, and the table-driven unit tests read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshlet_contracts.ports import PROXY_PORTS, RESERVED_PORTS
from ztunnel.proxy.context import ServedPod
from ztunnel.state.mesh import MeshIndex, NoHealthyEndpoint, Upstream


@dataclass(frozen=True, slots=True)
class Local:
    """To the app of `pod`, served by this process; `identity` is the destination workload's."""

    upstream: Upstream
    pod: ServedPod
    identity: str


@dataclass(frozen=True, slots=True)
class Hbone:
    """Over HBONE to `upstream`'s node, whose 15008 must prove `identity`."""

    upstream: Upstream
    identity: str


@dataclass(frozen=True, slots=True)
class Passthrough:
    """In plaintext to `upstream`, from the source pod's netns."""

    upstream: Upstream


@dataclass(frozen=True, slots=True)
class Refuse:
    """Not forwarded: the connection is reset and counted under `reason`."""

    reason: str
    detail: str


Route = Local | Hbone | Passthrough | Refuse


def route(index: MeshIndex, served: Mapping[str, ServedPod], ip: str, port: int) -> Route:
    """Where a connection to `ip:port` goes; `served` maps the uids of the pods this process serves."""
    if port in PROXY_PORTS:  # checked on accept already (`Accepted.admitted`); stated here for the decision
        return Refuse("self_loop", f"port {port} is ztunnel's")
    try:
        up = index.resolve(ip, port)
    except NoHealthyEndpoint as exc:
        return Refuse("no_healthy_endpoint", str(exc))
    return classify(served, up)


def classify(served: Mapping[str, ServedPod], up: Upstream) -> Route:
    """How to reach an endpoint already chosen (`up`): served here, over HBONE, or outside the mesh."""
    destination = up.workload
    if destination is None or not destination.enrolled:
        return Passthrough(up)
    if up.port in RESERVED_PORTS:  # an enrolled pod's ports of ztunnel are ztunnel's, whatever the VIP said
        return Refuse("self_loop", f"port {up.port} of {up.ip} is a ztunnel port")
    local = served.get(destination.uid)
    if local is not None:
        return Local(up, local, destination.identity)
    return Hbone(up, destination.identity)
