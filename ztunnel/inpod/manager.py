"""Which pods ztunnel serves: one `PodListeners` per workload uid, from ZDS messages.

`add` and `keep` open the pod's listeners (keep of a pod already served changes nothing), `del` closes
them, and after a reconnect `snapshot_sent` closes every pod the agent did not replay. The netns fd
each message carries is owned here from then on: kept while the pod is served, closed with it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from ztunnel.inpod.listeners import PodListeners
from ztunnel.inpod.protocol import WorkloadInfo

log = logging.getLogger(__name__)


class WorkloadManager:
    """Pods served by this ztunnel, by uid."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.pods: dict[str, tuple[WorkloadInfo | None, PodListeners]] = {}
        self.on_change = on_change
        """Called after pods were added or removed (the proxy starts or stops accepting on them)."""
        self._replayed: set[str] | None = None

    def add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        """Serve `uid` (add or keep); takes ownership of `netns_fd`."""
        if self._replayed is not None:
            self._replayed.add(uid)
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
        log.info("serving %s", info and f"{info.namespace}/{info.name}" or uid)
        if self.on_change is not None:
            self.on_change()

    def delete(self, uid: str) -> None:
        entry = self.pods.pop(uid, None)
        if entry is None:
            return
        entry[1].close()
        os.close(entry[1].netns_fd)
        log.info("stopped serving %s", uid)
        if self.on_change is not None:
            self.on_change()

    def replay_started(self) -> None:
        """A (re)connect: pods not replayed before `snapshot_done` are dropped then."""
        self._replayed = set()

    def snapshot_done(self) -> None:
        replayed, self._replayed = self._replayed or set(), None
        for uid in set(self.pods) - replayed:
            self.delete(uid)

    def close(self) -> None:
        for uid in list(self.pods):
            self.delete(uid)
