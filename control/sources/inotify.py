"""Which files of a directory tree changed, from the kernel (inotify(7)), for the file source.

The file source used to learn of a change only by polling: a stat of every file every 100 ms, which makes a
change wait for the next poll and, at 10,000 files, costs most of a core while nothing changes. With inotify
the kernel names the paths that changed: `Watcher.changed()` drains its queue and returns them (a new
directory is watched and returned whole, so files created in it before its watch was added are not missed).

What inotify cannot see (a directory on a network filesystem, a bind mount changed from another mount
namespace) and what it drops (a queue overflow, reported as `overflowed`) are the reason the source still
scans everything now and then; this module only makes that the exception. Linux only: `Watcher.open` returns
None where inotify is unavailable, and the source polls as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
MASK |= IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of NUL-padded name


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    return libc if hasattr(libc, "inotify_init1") else None


@dataclass(slots=True)
class Changes:
    """Paths inotify named: files created, changed, moved or deleted, and directories deleted or moved away."""

    files: set[Path] = field(default_factory=set)
    gone_dirs: set[Path] = field(default_factory=set)


class Watcher:
    """An inotify instance watching `root` and every directory below it (hidden ones too: the source skips
    their files, but a rename out of one is a change)."""

    def __init__(self, libc: ctypes.CDLL, fd: int, root: Path) -> None:
        self._libc = libc
        self.fd = fd
        self.root = root
        self._dirs: dict[int, Path] = {}
        self.overflowed = False
        """Events were lost (the kernel's queue overflowed, or a watch could not be added): scan everything."""
        self._watch_tree(root)

    @classmethod
    def open(cls, root: Path) -> Watcher | None:
        """A watcher on `root` (which must exist), or None where inotify is not available."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.warning("inotify unavailable (%s): polling the store", os.strerror(ctypes.get_errno()))
            return None
        return cls(libc, fd, root)

    @property
    def watching(self) -> bool:
        """Whether any directory is still watched (none once the root itself was removed)."""
        return bool(self._dirs)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _watch_tree(self, top: Path) -> list[Path]:
        """Watch `top` and its subdirectories; returns the files already in them."""
        files: list[Path] = []
        for current, dirs, names in os.walk(top):
            here = Path(current)
            self._watch(here)
            files.extend(here / n for n in names)
            dirs.sort()
        return files

    def _watch(self, directory: Path) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.ENOTDIR):  # gone again already: its parent's event says so
                log.warning("cannot watch %s (%s): scanning the store instead", directory, os.strerror(err))
                self.overflowed = True
            return
        self._dirs[wd] = directory

    def changed(self) -> Changes:
        """What the events queued since the last call name: files (and the files of new directories), and
        directories that went. Never blocks."""
        changes = Changes()
        paths = changes.files
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return changes
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                    continue
                directory = self._dirs.get(wd)
                if mask & IN_IGNORED:
                    self._dirs.pop(wd, None)
                    continue
                if directory is None:
                    continue
                if not raw:  # the watched directory itself went: its parent's event names it
                    continue
                path = directory / os.fsdecode(raw)
                if mask & IN_ISDIR:
                    if mask & (IN_CREATE | IN_MOVED_TO):
                        paths.update(self._watch_tree(path))
                    else:  # a directory deleted or moved away: everything known below it is to be looked at
                        changes.gone_dirs.add(path)
                    continue
                paths.add(path)
