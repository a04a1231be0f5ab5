"""The bpf(2) calls meshlet needs, through Debian's libbpf (ctypes): pin and open objects, read and
write map entries, attach programs to cgroups, and a netns' cookie.

This module needs no bcc and no compiler, so ztunnel (which only reads a pinned map) and the agent's
restart path (which reuses pinned programs) can use it cheaply. Every call raises `BpfError` with the
object and the kernel's reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
from pathlib import Path
from typing import Any

CData = Any
"""A ctypes struct or scalar passed by reference (typeshed has no common base for both)."""
SO_NETNS_COOKIE = 71
BPF_ANY = 0

_lib: ctypes.CDLL | None = None


class BpfError(OSError):
    """A bpf() call failed."""


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            _lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise BpfError(f"libbpf is not available ({name}): {exc}; install Debian's libbpf1") from None
        _lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
        _lib.bpf_obj_pin.argtypes = [ctypes.c_int, ctypes.c_char_p]
        for fn in ("bpf_map_update_elem",):
            getattr(_lib, fn).argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
        _lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        _lib.bpf_map_delete_elem.argtypes = [ctypes.c_int, ctypes.c_void_p]
        _lib.bpf_prog_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint]
        _lib.bpf_prog_detach2.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        _lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    return _lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc != -1 else ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return rc


def obj_get(path: Path) -> int:
    """An fd for the program, map or link pinned at `path` (close it when done)."""
    return _check(lib().bpf_obj_get(str(path).encode()), f"opening pinned {path}")


def obj_pin(fd: int, path: Path) -> None:
    _check(lib().bpf_obj_pin(fd, str(path).encode()), f"pinning at {path}")


def map_update(fd: int, key: CData, value: CData) -> None:
    _check(lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), BPF_ANY), "map update")


def map_lookup(fd: int, key: CData, value: CData) -> bool:
    """Fill `value`; False when the key is absent."""
    rc = lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
    if rc < 0:
        err = -rc if rc != -1 else ctypes.get_errno()
        if err == 2:  # ENOENT
            return False
        raise BpfError(err, f"map lookup: {os.strerror(err)}")
    return True


def map_delete(fd: int, key: CData) -> bool:
    rc = lib().bpf_map_delete_elem(fd, ctypes.byref(key))
    if rc < 0:
        err = -rc if rc != -1 else ctypes.get_errno()
        if err == 2:
            return False
        raise BpfError(err, f"map delete: {os.strerror(err)}")
    return True


def map_count(fd: int, key_size: int = 64) -> int:
    """Entries in a hash map (walks the keys; for status, not the data path)."""
    lib().bpf_map_get_next_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    key, nxt = ctypes.create_string_buffer(key_size), ctypes.create_string_buffer(key_size)
    count, prev = 0, None
    while lib().bpf_map_get_next_key(fd, prev, nxt) == 0:
        count += 1
        ctypes.memmove(key, nxt, key_size)
        prev = key
        if count > 10_000_000:
            break  # a map cannot be this big: stop rather than loop
    return count


def prog_attach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    """Attach to a cgroup (exclusive mode: attaching again replaces the program atomically)."""
    _check(lib().bpf_prog_attach(prog_fd, target_fd, attach_type, 0), f"attaching (type {attach_type})")


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    _check(lib().bpf_prog_detach2(prog_fd, target_fd, attach_type), f"detaching (type {attach_type})")


class _ProgInfo(ctypes.Structure):
    # The head of struct bpf_prog_info (uapi/linux/bpf.h); the kernel fills only what fits.
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32)]  # fmt: skip


class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32)]  # fmt: skip


def prog_id(fd: int) -> int:
    info = _ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "program info")
    return int(info.id)


def map_info(fd: int) -> tuple[int, int]:
    """(id, max_entries) of a map."""
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return int(info.id), int(info.max_entries)


def netns_cookie_of_socket(sock: socket.socket) -> int:
    """The cookie of the netns a socket was made in (what bpf_get_netns_cookie returns for it)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    return int.from_bytes(raw, "little")
