"""ztunnel's listeners inside one pod's netns: 15001 outbound, 15006 inbound plaintext, 15008 HBONE.

Sockets are created while this thread is in the pod's netns and keep it afterwards, so one process
serves every pod. Each listener carries SO_MARK (ztunnel's traffic is never captured again by the pod's
rules), SO_REUSEPORT (a new ztunnel can bind beside the old one during an upgrade and take over without
a refused connection) and IP_TRANSPARENT (it may accept connections addressed to other IPs).

When the old ztunnel of an upgrade closes its listeners, the connections waiting in their accept queues
would be reset, since a closed SO_REUSEPORT listener does not hand them to its siblings; with the pod's
`net.ipv4.tcp_migrate_req=1` (per netns, Linux >= 5.14) the kernel moves them to the new ztunnel's
listener instead. So the pod's netns gets it here, where ztunnel first works in it.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from meshlet_contracts.netns import entered_fd
from meshlet_contracts.ports import HBONE, INBOUND_PLAINTEXT, OUTBOUND, ZTUNNEL_MARK
from ztunnel.proxy.sockets import IP_TRANSPARENT, tunnel_liveness

log = logging.getLogger(__name__)
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
"""Per netns: /proc/sys/net is the opening thread's netns."""
PORTS = {"outbound": OUTBOUND, "inbound_plaintext": INBOUND_PLAINTEXT, "hbone": HBONE}
BACKLOG = 1024


def _listener(port: int, tunnel: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, ZTUNNEL_MARK)
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        if tunnel:
            tunnel_liveness(s)  # inherited by every accepted tunnel
        s.bind(("0.0.0.0", port))
        s.listen(BACKLOG)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


@dataclass(slots=True)
class PodListeners:
    """The three listening sockets of one pod, and the netns fd they were opened in."""

    netns_fd: int
    sockets: dict[str, socket.socket] = field(default_factory=dict)

    @classmethod
    def open(cls, netns_fd: int) -> PodListeners:
        """Open all three in the netns of `netns_fd`; on any failure none stays open."""
        pod = cls(netns_fd)
        try:
            with entered_fd(netns_fd):
                _migrate_requests()
                for name, port in PORTS.items():
                    pod.sockets[name] = _listener(port, tunnel=name == "hbone")
        except BaseException:
            pod.close()
            raise
        return pod

    def close(self) -> None:
        """Close the listening sockets (the netns fd is the caller's); a socket an asyncio server took over
        is closed by the server already, and closing it here again does nothing."""
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()

    def state(self) -> dict[str, object]:
        return {name: {"port": PORTS[name], "open": s.fileno() != -1} for name, s in self.sockets.items()}


def _migrate_requests() -> None:
    """Set the current netns's tcp_migrate_req (best effort: without it an upgrade may reset the few
    connections queued at the moment the old listener closes)."""
    try:
        if MIGRATE_REQ.read_text().strip() != "1":
            MIGRATE_REQ.write_text("1")
    except OSError as exc:
        log.warning("cannot set net.ipv4.tcp_migrate_req in a pod's netns: %s", exc)
