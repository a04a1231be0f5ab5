"""Network namespaces by path or fd: entering one on the current thread, and telling them apart.

setns(2) with CLONE_NEWNET moves only the calling thread. Sockets (and netlink sockets) created while
inside keep that netns after the thread switches back, which is how one process (the agent, ztunnel,
the lab CLI) works in many pods' namespaces without forking a helper per pod.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(OSError):
    """Entering or opening a network namespace failed."""


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered_fd(fd: int) -> Iterator[None]:
    """Run the body with this thread in the netns of `fd`; the thread's own netns is restored after."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


@contextlib.contextmanager
def entered(path: str | Path) -> Iterator[None]:
    """As `entered_fd`, for a netns file (`/var/run/netns/NAME`, `/proc/PID/ns/net`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with entered_fd(fd):
            yield
    finally:
        os.close(fd)


def inode(path: str | Path) -> int:
    """The netns identity: two paths name the same netns exactly when their inodes match."""
    return os.stat(path).st_ino
