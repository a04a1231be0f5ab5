"""A failed connect says why: the errno's name and meaning, and where it went, for the log line that reports it
(asyncio says only "Connect call failed", and its timeout has no text at all)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket

import pytest

from ztunnel.proxy import sockets

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(os.geteuid() != 0, reason="pod sockets are opened with setns: run as root"),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there now


async def test_a_refused_connect_names_the_errno_and_the_destination() -> None:
    own_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    port = closed_port()
    try:
        with pytest.raises(ConnectionRefusedError) as caught:
            await sockets.connect(own_netns, "127.0.0.1", port)
    finally:
        os.close(own_netns)
    assert caught.value.errno == errno.ECONNREFUSED
    assert f"ECONNREFUSED Connection refused connecting to 127.0.0.1:{port}" in str(caught.value)


async def test_a_connect_with_no_answer_says_it_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_answers(sock: socket.socket, address: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(sockets, "CONNECT_TIMEOUT", 0.01)
    monkeypatch.setattr(asyncio.get_running_loop(), "sock_connect", never_answers)
    own_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        with pytest.raises(TimeoutError) as caught:
            await sockets.connect(own_netns, "127.0.0.1", 9)
    finally:
        os.close(own_netns)
    assert str(caught.value).endswith("ETIMEDOUT no answer from 127.0.0.1:9 within 0.01 s")
