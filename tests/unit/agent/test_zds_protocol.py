"""ZDS messages over a real SOCK_SEQPACKET pair, with netns fds passed as SCM_RIGHTS."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from meshlet_contracts import zds as protocol


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        yield a, b


def test_add_workload_carries_the_netns_fd(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, ztunnel = pair
    info = protocol.WorkloadInfo("web", "mesh", "sa", ("10.0.0.1",))
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        protocol.send(agent, {"type": "add_workload", "uid": "u1", "workload": info.to_wire()}, fd)
    finally:
        os.close(fd)
    got = protocol.recv(ztunnel)
    assert got is not None
    message, fds = got
    try:
        assert protocol.WorkloadInfo.from_wire(message["workload"]) == info
        assert os.fstat(fds[0]).st_ino == os.stat("/proc/self/ns/net").st_ino
    finally:
        for f in fds:
            os.close(f)


@pytest.mark.parametrize(
    ("message", "with_fd", "error"),
    [
        ({"type": "add_workload", "uid": "u1", "workload": {}}, False, "needs exactly one netns fd"),
        ({"type": "del_workload", "uid": "u1"}, True, "carries no fd"),
        ({"type": "explode"}, False, "unknown message"),
        ({"type": "del_workload"}, False, "needs a string uid"),
    ],
)
def test_malformed_messages_are_refused_and_their_fds_closed(
    pair: tuple[socket.socket, socket.socket], message: dict[str, object], with_fd: bool, error: str
) -> None:
    agent, ztunnel = pair
    fd = os.open("/dev/null", os.O_RDONLY) if with_fd else None
    try:
        # Bypass `send`'s own encoding checks: the peer might not be ours.
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))] if fd is not None else []
        agent.sendmsg([protocol.encode(message)], anc)
    finally:
        if fd is not None:
            os.close(fd)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(protocol.ZdsError, match=error):
        protocol.recv(ztunnel)
    assert set(os.listdir("/proc/self/fd")) <= before  # a refused message leaks no fd


def test_end_of_stream(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, ztunnel = pair
    agent.close()
    assert protocol.recv(ztunnel) is None
