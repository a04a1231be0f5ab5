"""The eBPF backend: capture without iptables, with programs loaded once per node (bcc) and pinned.

- Outbound: `connect4` and `sockops` (bpf/) are attached to the cgroup holding the node's pods.
  Enrolling a pod is one entry in the `enrolled` map: its netns cookie -> its IP. The pod's connects
  are rewritten to `pod_ip:15001`; ztunnel reads the original destination from the pinned `orig_dst`
  map by the client's address.
- Inbound: `inbound` is a tc ingress filter on the pod's eth0 (one per pod, the program shared): new
  connections are assigned to ztunnel's 15006 listener with bpf_sk_assign, without NAT.
- Replies to a caller's IP: `net.ipv4.tcp_fwmark_accept=1` and the shared reply route (routing.py); and
  `net.ipv4.fwmark_reflect=1`, so that the kernel's own answers (the RST of a port nobody listens on) carry
  ztunnel's mark too and take that route back to ztunnel, instead of leaving for the caller's real
  address while ztunnel's connect waits for its timeout (the iptables backend gets this from connmark).
Nothing here is undone when the agent exits: a restart finds the pins and the attachments in place.
All per-pod calls block (nsenter, tc, ip): the agent runs them in worker threads.
"""

from __future__ import annotations

import ctypes
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.redirect.routing import (
    RedirectError,
    in_netns,
    install_route,
    remove_route,
    route_present,
    set_sysctls,
    sysctls,
)
from bpf import loader
from meshlet_contracts import bpf_syscall as syscall
from meshlet_contracts.bpf_maps import COUNTERS, FLAG_LOCAL_HOPS, EnrollValue, MeshletConfig, ip_to_net, program_pin
from meshlet_contracts.netns import entered

TC_PREF = 1717
"""Our filter's preference on the pod's eth0 ingress: how we find (and only ever delete) ours."""
DEV = "eth0"
SYSCTLS = ("net.ipv4.tcp_fwmark_accept", "net.ipv4.fwmark_reflect")
"""Set to 1 in an enrolled pod's netns: replies to ztunnel's marked connections to the app, the app's
(accepted sockets take the SYN's mark) and the kernel's (resets, ICMP errors reflect the mark), route back."""


@dataclass(frozen=True, slots=True)
class EbpfSettings:
    probe_ip: str
    pin_dir: Path
    """Per node: the programs and maps are pinned here (ztunnel opens orig_dst under it)."""
    pods_cgroup: Path
    """The cgroup v2 directory holding this node's pods (connect4 and sockops attach there)."""
    local_hops: bool = False
    """Short-circuit same-node app <-> ztunnel hops with sk_msg. Off by default: the kernel does not
    hold redirected data to the receiver's buffer size, so a slow reader costs unbounded memory."""


def netns_cookie(netns: Path) -> int:
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        return syscall.netns_cookie_of_socket(sock)


class EbpfBackend:
    """Installs, checks and removes one pod's capture; owns the node's programs."""

    name = "ebpf"

    def __init__(self, settings: EbpfSettings) -> None:
        self.settings = settings
        try:
            self.programs = loader.load(settings.pin_dir)
            loader.attach_cgroup(self.programs, settings.pods_cgroup)
        except (loader.LoadError, syscall.BpfError) as exc:
            raise RedirectError(f"eBPF backend: {exc}") from None
        flags = FLAG_LOCAL_HOPS if settings.local_hops else 0
        config = MeshletConfig(probe_ip=ip_to_net(settings.probe_ip), flags=flags)
        syscall.map_update(self.programs.maps["config"], _u32(0), config)
        self._inbound_id = syscall.prog_id(self.programs.progs["inbound"])

    # ----- per pod -----

    def drift(self, netns: Path, ips: tuple[str, ...]) -> list[str]:
        problems = []
        value = EnrollValue()
        if not syscall.map_lookup(self.programs.maps["enrolled"], _u64(netns_cookie(netns)), value):
            problems.append("not in the enrolled map")
        elif ips and value.pod_ip != ip_to_net(ips[0]):
            problems.append("enrolled map entry has another IP")
        if self._filter_id(netns) != self._inbound_id:
            problems.append(f"tc ingress filter (pref {TC_PREF}) on {DEV} is missing or another program")
        for sysctl, setting in sysctls(netns, list(SYSCTLS)).items():
            if setting != "1":
                problems.append(f"{sysctl} is not 1")
        if not route_present(netns):
            problems.append("the reply route (fwmark 0x111 -> table 100) is missing")
        return problems

    def install(self, netns: Path, ips: tuple[str, ...] = ()) -> bool:
        if not ips:
            raise RedirectError(f"eBPF capture needs the pod's IP ({netns})")
        if not self.drift(netns, ips):
            return False
        set_sysctls(netns, dict.fromkeys(SYSCTLS, "1"))
        install_route(netns)
        if self._filter_id(netns) != self._inbound_id:
            self._attach_tc(netns)
        # Enrolled last: from this entry on, connects are rewritten, and everything they need is there.
        value = EnrollValue(pod_ip=ip_to_net(ips[0]), flags=0)
        syscall.map_update(self.programs.maps["enrolled"], _u64(netns_cookie(netns)), value)
        return True

    def remove(self, netns: Path, ips: tuple[str, ...] = ()) -> None:
        syscall.map_delete(self.programs.maps["enrolled"], _u64(netns_cookie(netns)))
        if self._filter_id(netns) is not None:
            in_netns(netns, ["tc", "filter", "del", "dev", DEV, "ingress", "pref", str(TC_PREF)])
        remove_route(netns)
        set_sysctls(netns, dict.fromkeys(SYSCTLS, "0"))

    def _attach_tc(self, netns: Path) -> None:
        qdiscs = json.loads(in_netns(netns, ["tc", "-j", "qdisc", "show", "dev", DEV]) or "[]")
        if not any(q.get("kind") == "clsact" for q in qdiscs):
            in_netns(netns, ["tc", "qdisc", "add", "dev", DEV, "clsact"])
        prog = program_pin(self.settings.pin_dir, "inbound")
        in_netns(netns, ["tc", "filter", "replace", "dev", DEV, "ingress", "pref", str(TC_PREF), "handle", "1",
                         "bpf", "direct-action", "object-pinned", str(prog)])  # fmt: skip

    def _filter_id(self, netns: Path) -> int | None:
        """The program id of our tc filter in `netns`, None when there is none."""
        try:
            filters = json.loads(in_netns(netns, ["tc", "-j", "filter", "show", "dev", DEV, "ingress"]) or "[]")
        except RedirectError:
            return None
        for f in filters:
            if f.get("pref") == TC_PREF and "options" in f:
                prog = f["options"].get("prog", {})
                return int(prog["id"]) if "id" in prog else None
        return None

    # ----- node -----

    def status(self) -> dict[str, Any]:
        """Programs (ids, attach points) and maps (size, fill) for the agent's status API."""
        programs = [
            {
                "name": name,
                "id": syscall.prog_id(fd),
                "attach": self.programs.attached.get(name, f"tc ingress on {DEV} of each enrolled pod"),
            }
            for name, fd in self.programs.progs.items()
        ]
        maps = []
        for name, fd in self.programs.maps.items():
            map_id, max_entries = syscall.map_info(fd)
            maps.append({"name": name, "id": map_id, "maxEntries": max_entries, "entries": syscall.map_count(fd)})
        counters = {}
        for i, name in enumerate(COUNTERS):
            value = _u64(0)
            syscall.map_lookup(self.programs.maps["counters"], _u32(i), value)
            counters[name] = int(value.value)
        return {"pinDir": str(self.settings.pin_dir), "reused": self.programs.reused, "programs": programs,
                "localHops": self.settings.local_hops,
                "maps": maps, "counters": counters}  # fmt: skip


def _u32(v: int) -> ctypes.c_uint32:
    return ctypes.c_uint32(v)


def _u64(v: int) -> ctypes.c_uint64:
    return ctypes.c_uint64(v)
