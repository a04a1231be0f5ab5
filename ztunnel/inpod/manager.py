"""Which pods ztunnel serves: one `PodListeners` per workload uid, from ZDS messages.

`add` and `keep` open the pod's listeners (keep of a pod already served in the same netns changes
nothing; in another netns, the pod's was recreated, so its listeners move there), `del` closes them,
and after a reconnect `snapshot_sent` closes every pod the agent did not replay. The netns fd each
message carries is owned here from then on: kept while the pod is served, closed with it. A pod whose
hook fails (`pod_added` raises) is not served at all: nothing of it stays open, and the error is the
message's.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from meshlet_contracts.zds import WorkloadInfo
from ztunnel.inpod.listeners import PodListeners

log = logging.getLogger(__name__)


class PodHooks(Protocol):
    """What the proxy does when a pod starts or stops being served."""

    def pod_added(self, uid: str, info: WorkloadInfo | None, listeners: PodListeners) -> None:
        """The pod's listeners are open: start accepting on them."""

    def pod_removed(self, uid: str) -> None:
        """Stop accepting; called before the listeners close, so no server is left on a closed socket."""


class WorkloadManager:
    """Pods served by this ztunnel, by uid."""

    def __init__(self, hooks: PodHooks | None = None) -> None:
        self.pods: dict[str, tuple[WorkloadInfo | None, PodListeners]] = {}
        self.hooks = hooks
        self.snapshots = 0
        """Completed replays (`snapshot_sent`): ztunnel is ready only after the first."""
        self._replayed: set[str] | None = None

    def add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        """Serve `uid` (add or keep); takes ownership of `netns_fd`."""
        if self._replayed is not None:
            self._replayed.add(uid)
        if uid in self.pods and not _same_netns(self.pods[uid][1].netns_fd, netns_fd):
            log.info("the netns of %s changed; moving its listeners to the new one", uid)
            self.delete(uid)
        if uid in self.pods:
            os.close(netns_fd)  # already listening in that pod: the earlier fd serves
            if info is not None:
                self.pods[uid] = (info, self.pods[uid][1])
            return
        try:
            listeners = PodListeners.open(netns_fd)
        except OSError:
            os.close(netns_fd)
            raise
        self.pods[uid] = (info, listeners)
        if self.hooks is not None:
            try:
                self.hooks.pod_added(uid, info, listeners)
            except BaseException:
                # Not served after all: whatever the hook set up, the listeners and the fd must not stay.
                del self.pods[uid]
                self.hooks.pod_removed(uid)
                listeners.close()
                os.close(netns_fd)
                raise
        log.info("serving %s", info and f"{info.namespace}/{info.name}" or uid)

    def delete(self, uid: str) -> None:
        entry = self.pods.pop(uid, None)
        if entry is None:
            return
        if self.hooks is not None:
            self.hooks.pod_removed(uid)
        entry[1].close()
        os.close(entry[1].netns_fd)
        log.info("stopped serving %s", uid)

    def replay_started(self) -> None:
        """A (re)connect: pods not replayed before `snapshot_done` are dropped then."""
        self._replayed = set()

    def snapshot_done(self) -> None:
        replayed, self._replayed = self._replayed or set(), None
        self.snapshots += 1
        for uid in set(self.pods) - replayed:
            self.delete(uid)

    def stop_listening(self) -> None:
        """Drain: close every pod's listening sockets (the kernel then hands new connections to a newer
        ztunnel's listeners on the same ports); the pods stay served, their netns fds held, so connections
        already accepted go on."""
        for _, listeners in self.pods.values():
            listeners.close()

    def close(self) -> None:
        for uid in list(self.pods):
            self.delete(uid)


def _same_netns(a: int, b: int) -> bool:
    """Whether two netns fds name one netns (nsfs: the same device and inode)."""
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
