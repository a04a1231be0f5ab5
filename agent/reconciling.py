"""The agent's reconcile loop: make each pod of this node captured (or not) as its labels ask.

For an enrolled pod: find its netns by IP, install the redirection (a no-op when the rules are already
exactly right, so a restarted agent changes nothing and established connections survive), then hand
the netns to ztunnel; the pod is `pending` until ztunnel acks. For a pod no longer enrolled: tell
ztunnel, then remove the rules. A crash of the agent leaves the rules in place: captured traffic is
refused while ztunnel is away (fail closed), never passed around it.
A pod's netns is looked up once and then re-checked on every pass (a stat of its path): when the path is
gone or names another netns (the pod's netns was recreated, maybe under the same name), the pod is looked
up again, and if the netns ztunnel holds is not the new one, ztunnel is told to drop the old one and
handed the new one, so a recreated pod is never shown captured while ztunnel listens in its old netns.
Kernel work runs in worker threads; the event loop only decides.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.discovery import FoundNetns, netns_by_ip
from agent.enrolling import PodTarget
from agent.zds import ZdsServer, ZdsUnavailable
from meshlet_contracts.zds import WorkloadInfo

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def install(self, netns: Path, ips: tuple[str, ...]) -> bool: ...
    def remove(self, netns: Path, ips: tuple[str, ...]) -> None: ...


@dataclass(slots=True)
class PodStatus:
    """Where one pod of this node stands."""

    target: PodTarget
    state: str
    """captured | pending | error | plain"""
    reason: str | None = None
    netns: str | None = None
    since: float = field(default_factory=time.time)
    """When the pod entered `state` (epoch seconds): what enrollment latency is measured against."""

    def to_json(self) -> dict[str, object]:
        t = self.target
        return {"uid": t.uid, "name": t.name, "namespace": t.namespace, "ips": list(t.ips), "enrolled": t.enrolled,
                "state": self.state, "reason": self.reason, "netns": self.netns, "since": self.since}  # fmt: skip


class Reconciler:
    """Holds every pod's status and the netns fds ztunnel may be handed again on a reconnect."""

    def __init__(
        self, backend: Backend, zds: ZdsServer, annotate: Callable[[PodTarget, str | None], object] | None = None
    ) -> None:
        self.backend = backend
        self.zds = zds
        self.annotate = annotate
        """Records a pod's redirection state on its object ('enabled' or None); blocking, run in a thread."""
        self._annotated: dict[str, str | None] = {}
        self.pods: dict[str, PodStatus] = {}
        self._netns: dict[str, FoundNetns] = {}
        self._fds: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._first = True

    def replay(self) -> list[tuple[str, WorkloadInfo, int]]:
        """What ztunnel gets after it (re)connects: every enrolled pod whose rules are in place."""
        return [
            (uid, _info(st.target), self._fds[uid])
            for uid, st in sorted(self.pods.items())
            if st.target.enrolled and uid in self._fds and st.state in ("captured", "pending")
        ]

    async def sync(self, targets: dict[str, PodTarget]) -> None:
        async with self._lock:
            index: dict[str, FoundNetns] | None = None
            cached = {uid: self._netns[uid] for uid in targets if uid in self._netns}
            for uid in await asyncio.to_thread(_moved, cached) if cached else ():
                del self._netns[uid]  # looked up again below
            for uid, target in targets.items():
                netns = self._netns.get(uid)
                if netns is None:
                    if index is None:
                        index = await asyncio.to_thread(netns_by_ip)
                    netns = next((index[ip] for ip in target.ips if ip in index), None)
                if target.enrolled:
                    await self._enroll(target, netns)
                elif (uid in self.pods and self.pods[uid].target.enrolled) or (self._first and netns is not None):
                    # Unenrolled now, or maybe enrolled before an agent restart: take our rules away.
                    await self._unenroll(target, netns)
                else:
                    self._set(target, "plain", None, netns)
                if netns is not None:
                    self._netns[uid] = netns
            for uid in set(self.pods) - set(targets):
                await self._forget(uid)
                self._annotated.pop(uid, None)
            await self._annotate_changes()
            self._first = False

    async def _annotate_changes(self) -> None:
        if self.annotate is None:
            return
        for uid, st in self.pods.items():
            value = "enabled" if st.state in ("captured", "pending") else None
            if uid in self._annotated and self._annotated[uid] == value:
                continue
            if uid not in self._annotated and value is None and not st.target.enrolled:
                self._annotated[uid] = None  # never enrolled: nothing to record
                continue
            try:
                await asyncio.to_thread(self.annotate, st.target, value)
                self._annotated[uid] = value
            except OSError as exc:
                log.warning("could not annotate %s: %s", st.target.ref, exc)

    async def _enroll(self, target: PodTarget, netns: FoundNetns | None) -> None:
        if netns is None:
            self._set(target, "error", f"no network namespace holds {', '.join(target.ips)} (yet)", None)
            return
        try:
            changed = await asyncio.to_thread(self.backend.install, netns.path, tuple(target.ips))
        except Exception as exc:  # an iptables failure is this pod's problem only
            self._set(target, "error", f"{self.backend.name}: {exc}", netns)
            return
        if changed:
            log.info("captured %s (%s rules installed in %s)", target.ref, self.backend.name, netns.path)
        held = self._fds.get(target.uid)
        replaced = held is not None and os.fstat(held).st_ino != netns.inode
        if replaced:
            await self._release_old_netns(target)
        if target.uid not in self._fds:
            fd = os.open(netns.path, os.O_RDONLY | os.O_CLOEXEC)
            if os.fstat(fd).st_ino != netns.inode:  # recreated between the lookup and the open
                os.close(fd)
                self._netns.pop(target.uid, None)
                self._set(target, "error", f"the network namespace at {netns.path} changed; looking again", None)
                return
            self._fds[target.uid] = fd
        if target.uid in self.zds.served and not replaced:
            self._set(target, "captured", None, netns)
            return
        try:
            await self.zds.add(target.uid, _info(target), self._fds[target.uid])
            self._set(target, "captured", None, netns)
        except ZdsUnavailable as exc:
            self._set(target, "pending", str(exc), netns)

    async def _release_old_netns(self, target: PodTarget) -> None:
        """The pod's netns was recreated: ztunnel drops the old one, our capture there goes (best effort:
        it frees the eBPF backend's entry for it), and its fd is closed. The caller hands over the new one."""
        log.warning("%s has a new network namespace; handing it to ztunnel in place of the old one", target.ref)
        if target.uid in self.zds.served:
            try:
                await self.zds.delete(target.uid)
            except ZdsUnavailable as exc:  # the add that follows replaces it in ztunnel all the same
                log.warning("could not tell ztunnel to drop the old netns of %s: %s", target.ref, exc)
        fd = self._fds[target.uid]
        try:
            await asyncio.to_thread(self.backend.remove, Path(f"/proc/{os.getpid()}/fd/{fd}"), tuple(target.ips))
        except Exception as exc:  # an old netns nobody uses any more: a leftover rule there harms no one
            log.info("could not remove the capture from the old netns of %s: %s", target.ref, exc)
        self._close_fd(target.uid)

    async def _unenroll(self, target: PodTarget, netns: FoundNetns | None) -> None:
        if target.uid in self.zds.served:
            try:
                await self.zds.delete(target.uid)
            except ZdsUnavailable as exc:
                log.warning("could not tell ztunnel to drop %s: %s", target.ref, exc)
        self._close_fd(target.uid)
        if netns is not None:
            try:
                await asyncio.to_thread(self.backend.remove, netns.path, tuple(target.ips))
            except Exception as exc:
                self._set(target, "error", f"removing rules: {exc}", netns)
                return
        log.info("released %s", target.ref)
        self._set(target, "plain", None, netns)

    async def _forget(self, uid: str) -> None:
        status = self.pods.pop(uid)
        self._netns.pop(uid, None)
        if uid in self.zds.served:
            try:
                await self.zds.delete(uid)
            except ZdsUnavailable as exc:
                log.warning("could not tell ztunnel to drop %s: %s", status.target.ref, exc)
        self._close_fd(uid)

    def _close_fd(self, uid: str) -> None:
        fd = self._fds.pop(uid, None)
        if fd is not None:
            os.close(fd)

    def _set(self, target: PodTarget, state: str, reason: str | None, netns: FoundNetns | None) -> None:
        old = self.pods.get(target.uid)
        if old is None or (old.state, old.reason) != (state, reason):
            if state == "error":
                log.error("%s: %s", target.ref, reason)  # once per distinct error
        since = old.since if old is not None and old.state == state else time.time()
        self.pods[target.uid] = PodStatus(target, state, reason, str(netns.path) if netns else None, since)


def _info(t: PodTarget) -> WorkloadInfo:
    return WorkloadInfo(t.name, t.namespace, t.service_account, t.ips)


def _moved(cached: dict[str, FoundNetns]) -> set[str]:
    """The pods whose netns path is gone or names another netns than when it was found (a stat each:
    cheap, but blocking, so run in a worker thread)."""
    moved = set()
    for uid, netns in cached.items():
        try:
            if os.stat(netns.path).st_ino == netns.inode:
                continue
        except OSError:
            pass
        moved.add(uid)
    return moved
