"""Where a captured connection was going, whichever backend captured it.

- iptables: nat REDIRECT keeps it in conntrack, read with SO_ORIGINAL_DST.
- eBPF, outbound: connect4 rewrote the destination and sockops recorded the original in the pinned
  `orig_dst` map under the client's address, which is the accepted socket's peer; the entry is
  deleted once read (the map is an LRU besides, so abandoned entries cannot fill it).
- eBPF, inbound: no NAT at all: the accepted socket's own address is the destination.
Map reads are single bpf() syscalls that never block.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from meshlet_contracts import bpf_syscall as syscall
from meshlet_contracts.bpf_maps import ConnKey, OrigDst, ip_to_net, map_pin, net_to_ip

SO_ORIGINAL_DST = 80


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """Where a REDIRECTed connection was going (netfilter's SO_ORIGINAL_DST, a sockaddr_in)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


class OriginalDestination:
    """Looks up original destinations; the eBPF map is opened on first need (the agent pins it)."""

    def __init__(self, bpf_dir: Path | None) -> None:
        self.bpf_dir = bpf_dir
        self._fd: int | None = None

    def _map(self) -> int | None:
        if self._fd is None and self.bpf_dir is not None:
            path = map_pin(self.bpf_dir, "orig_dst")
            if path.exists():
                self._fd = syscall.obj_get(path)
        return self._fd

    def outbound(self, sock: socket.socket, peer: tuple[str, int]) -> tuple[str, int]:
        try:
            return original_dst(sock)
        except OSError:
            fd = self._map()
            if fd is None:
                raise
        key, value = ConnKey(ip=ip_to_net(peer[0]), port=peer[1]), OrigDst()
        if not syscall.map_lookup(fd, key, value):
            raise OSError(f"no original destination for {peer[0]}:{peer[1]} (neither conntrack nor the eBPF map)")
        syscall.map_delete(fd, key)
        return net_to_ip(value.ip), int(value.port)

    @staticmethod
    def inbound(sock: socket.socket) -> tuple[str, int]:
        try:
            return original_dst(sock)
        except OSError:
            ip, port = sock.getsockname()[:2]
            return str(ip), int(port)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
