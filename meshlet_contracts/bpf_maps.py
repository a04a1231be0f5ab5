"""ctypes mirrors of the structs in `bpf/meshlet.h`, one per map, and the names the maps are pinned under:
the contract between the BPF programs, the agent that loads them and ztunnel that reads `orig_dst`.
`tests/unit/meshlet_contracts/test_bpf_maps.py` compiles the header and checks every size and offset, so
the two sides cannot drift apart silently."""

from __future__ import annotations

import ctypes
import socket
import struct
from pathlib import Path

PIN_ROOT = Path("/sys/fs/bpf/meshlet")
VERSION = "5"
"""Bumped when a program or map changes shape: pins of another version are replaced, not reused."""
MAPS = ("enrolled", "orig_dst", "config", "counters", "pending_dst", "local_hops")
PROGRAMS = ("connect4", "sockops", "inbound", "local_hop")
COUNTERS = ("redirected", "recorded", "steered", "no_listener", "hops", "shortcut", "reset")


def objects_dir(pin_dir: Path) -> Path:
    """Where a node's pins of this version live (bpffs holds only BPF objects: the version is a
    directory name)."""
    return pin_dir / f"v{VERSION}"


def program_pin(pin_dir: Path, name: str) -> Path:
    return objects_dir(pin_dir) / f"prog_{name}"


def map_pin(pin_dir: Path, name: str) -> Path:
    return objects_dir(pin_dir) / f"map_{name}"


def ip_to_net(ip: str) -> int:
    """An IPv4 address as the u32 the kernel stores (network byte order), read natively."""
    return int(struct.unpack("=I", socket.inet_aton(ip))[0])


def net_to_ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", value))


class EnrollValue(ctypes.Structure):
    """struct enroll_value; key: the pod netns' cookie (u64)."""

    _fields_ = [("pod_ip", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class OrigDst(ctypes.Structure):
    """struct orig_dst: the address an app connected to before connect4 rewrote it."""

    _fields_ = [("ip", ctypes.c_uint32), ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class ConnKey(ctypes.Structure):
    """struct conn_key: the client's address as ztunnel's accepted socket sees its peer."""

    _fields_ = [("ip", ctypes.c_uint32), ("port", ctypes.c_uint32)]


class HopKey(ctypes.Structure):
    """struct hop_key: one end of a same-node app <-> ztunnel hop (the `local_hops` sockhash)."""

    _fields_ = [("local_ip", ctypes.c_uint32), ("remote_ip", ctypes.c_uint32), ("local_port", ctypes.c_uint32),
                ("remote_port", ctypes.c_uint32)]  # fmt: skip


FLAG_LOCAL_HOPS = 1
"""MESHLET_FLAG_LOCAL_HOPS: turn on the sk_msg short-circuit of same-node hops."""


class MeshletConfig(ctypes.Structure):
    """struct meshlet_config (the single entry of `config`)."""

    _fields_ = [("probe_ip", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


STRUCTS: dict[str, type[ctypes.Structure]] = {
    "enroll_value": EnrollValue,
    "orig_dst": OrigDst,
    "conn_key": ConnKey,
    "hop_key": HopKey,
    "meshlet_config": MeshletConfig,
}
