"""The channel's waiters: a reader and a writer waiting at once, and one of them cancelled, never take the other
down with it (a future shared between two coroutines is cancelled for both)."""

from __future__ import annotations

import asyncio

import pytest

from ztunnel.l7.channel import Channel, ChannelClosed

pytestmark = pytest.mark.asyncio


class FakeSide:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.eof_in = self.eof_out = False
        self.paused = False

    def write(self, data: bytes | memoryview) -> None:
        self.written.append(bytes(data))

    def write_eof(self) -> None:
        self.eof_out = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None: ...

    def close(self) -> None: ...


async def test_cancelled_reader_leaves_the_writer_waiting_and_wakeable() -> None:
    channel = Channel()
    channel.attach(FakeSide())  # type: ignore[arg-type]
    channel.pause_reading()  # the side's write buffer is full
    reader = asyncio.ensure_future(channel.read())
    writer = asyncio.ensure_future(channel.drain())
    await asyncio.sleep(0)
    reader.cancel()
    await asyncio.sleep(0)
    assert reader.cancelled() and not writer.done()
    channel.resume_reading()
    await asyncio.wait_for(writer, 1)


async def test_two_readers_one_cancelled_the_other_gets_the_data() -> None:
    channel = Channel()
    first = asyncio.ensure_future(channel.read())
    second = asyncio.ensure_future(channel.read())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    channel.write(b"data")
    assert await asyncio.wait_for(second, 1) == b"data"


async def test_reset_side_wakes_all_waiters_with_an_error() -> None:
    channel = Channel()
    side = FakeSide()
    channel.attach(side)  # type: ignore[arg-type]
    channel.pause_reading()
    reader = asyncio.ensure_future(channel.read())
    writer = asyncio.ensure_future(channel.drain())
    await asyncio.sleep(0)
    channel.side_lost(side, ConnectionResetError("reset"))  # type: ignore[arg-type]
    for task in (reader, writer):
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(task, 1)


async def test_reading_pauses_the_side_over_the_limit_and_resumes_it() -> None:
    channel = Channel(limit=10)
    side = FakeSide()
    channel.attach(side)  # type: ignore[arg-type]
    channel.write(b"x" * 6)
    assert not side.paused
    channel.write(b"y" * 6)
    assert side.paused
    assert await channel.read() == b"x" * 6 + b"y" * 6
    assert not side.paused
