"""Fuzz the sans-IO HTTP/2 layer of HBONE with hostile frame sequences, on the server and on the client side.

The frames are built, not only random bytes: every frame type with wrong lengths, flags, stream ids (0, the
reserved bit, the peer's parity, 2^31-1), SETTINGS values out of range, window increments of 0 and 2^31-1,
padding longer than the frame, CONTINUATION without HEADERS, header blocks with CRLF/NUL/Unicode values; then
delivered in arbitrary pieces, and a valid conversation with bytes flipped, cut out or inserted. Whatever arrives:
- `receive_data` raises nothing but `ProtocolError` (the I/O layer's cue to send GOAWAY and close), and after it
  the connection ignores further input;
- state stays bounded: open streams within SETTINGS_MAX_CONCURRENT_STREAMS, the reset memory within its cap,
  an open header block within its limit;
- what the connection writes back stays proportional to what it read (no amplification: at most 4x + 1 KiB).
A hang would trip the test's timeout.
"""

from __future__ import annotations

import struct

import pytest
from hpack import Encoder
from hypothesis import example, given
from hypothesis import strategies as st

from tests.unit.fuzz import fuzz_settings
from ztunnel.hbone import (
    DataReceived,
    ErrorCode,
    H2Connection,
    H2Settings,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    StreamStateError,
)
from ztunnel.hbone import frames as fr

SETTINGS = H2Settings(initial_window_size=70_000, connection_window_size=200_000, max_concurrent_streams=8)
AMPLIFICATION = 4
"""Bytes written per byte read, at most (plus `SLACK`): a reply to every frame fits in this."""
SLACK = 1024

# ----- strategies: one frame, structured -----

stream_ids = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9, 11, 13, 101, 2**31 - 1, 2**31 | 1, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
u32 = st.one_of(st.sampled_from([0, 1, 65_535, 2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
texts = st.one_of(
    st.sampled_from(["", " ", "a\r\nb", "a\0b", "\n", "x" * 300, "é", "\u0668\u0660", "\ud7ff", "\t1"]),
    st.text(max_size=20),
)
field_names = st.one_of(
    st.sampled_from(
        [
            ":method",
            ":authority",
            ":path",
            ":scheme",
            ":protocol",
            ":status",
            ":other",
            "baggage",
            "forwarded",
            "connection",
            "te",
            "Upper",
            "a b",
            "",
            "x-forwarded-for",
            "traceparent",
        ]
    ),
    st.text(max_size=10),
)
authorities = st.one_of(
    st.sampled_from(
        [
            "10.0.0.2:80",
            "[fd00::1]:443",
            "10.0.0.2",
            "10.0.0.2:0",
            "10.0.0.2:65536",
            ":80",
            "a@b:80",
            "[::1:80",
            "10.0.0.2:\u0668\u0660",
            "10.0.0.2:+80",
            "h\r\nx:80",
            "10.0.0.2:80\0",
        ]
    ),
    texts,
)


@st.composite
def header_lists(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Mostly CONNECT-like requests with something wrong, sometimes responses or trailers."""
    base = draw(
        st.sampled_from(
            [
                [(":method", "CONNECT"), (":authority", draw(authorities))],
                [(":status", draw(st.sampled_from(["200", "100", "101", "503", "99", "2000", "abc"])))],
                [(":method", "GET"), (":scheme", "https"), (":path", "/")],
                [],
            ]
        )
    )
    extra = draw(st.lists(st.tuples(field_names, texts), max_size=4))
    fields = base + extra
    return draw(st.permutations(fields)) if draw(st.booleans()) else fields


def header_block(fields: list[tuple[str, str]]) -> bytes:
    # Never-indexed literals leave the HPACK tables alone, so blocks stay decodable in any order and the
    # fuzzer reaches the header checks rather than desynchronizing the tables at the first reordering.
    return Encoder().encode([(n, v, True) for n, v in fields])


@st.composite
def payloads(draw: st.DrawFn, frame_type: int) -> bytes:
    if frame_type in (fr.HEADERS, fr.CONTINUATION, fr.PUSH_PROMISE):
        body = header_block(draw(header_lists()))
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body)))]  # a block cut short: HPACK must reject it
        return body
    if frame_type == fr.SETTINGS:
        ids = st.one_of(st.integers(1, 8), st.integers(0, 0xFFFF))
        pairs = draw(st.lists(st.tuples(ids, u32), max_size=5))
        return b"".join(struct.pack(">HI", i, v) for i, v in pairs)
    if frame_type in (fr.WINDOW_UPDATE, fr.RST_STREAM):
        return struct.pack(">I", draw(u32))
    if frame_type == fr.PING:
        return draw(st.binary(min_size=8, max_size=8))
    if frame_type == fr.GOAWAY:
        return struct.pack(">II", draw(u32), draw(u32)) + draw(st.binary(max_size=20))
    if frame_type == fr.PRIORITY:
        return struct.pack(">IB", draw(u32), draw(st.integers(0, 255)))
    return draw(st.binary(max_size=300))


STREAM_FRAMES = (fr.HEADERS, fr.DATA, fr.DATA, fr.DATA, fr.WINDOW_UPDATE, fr.RST_STREAM, fr.PRIORITY)
CONNECTION_FRAMES = (fr.PING, fr.SETTINGS, fr.WINDOW_UPDATE, fr.GOAWAY)


@st.composite
def frames(draw: st.DrawFn, opened: list[int] | None = None) -> bytes:
    """One frame: mostly plausible (so that sequences get deep into the state machine), else with its type,
    length, flags, padding, priority fields or stream id wrong. `opened`: the streams the sequence opened."""
    if draw(st.integers(0, 9)) < 8:
        return draw(plausible_frames([] if opened is None else opened))
    frame_type = draw(st.one_of(st.integers(0, 9), st.integers(10, 255)))
    flags = draw(
        st.one_of(
            st.sampled_from([0, fr.FLAG_END_STREAM, fr.FLAG_END_HEADERS, fr.FLAG_END_STREAM | fr.FLAG_END_HEADERS]),
            st.integers(0, 255),
        )
    )
    body = draw(payloads(frame_type))
    if flags & fr.FLAG_PRIORITY and frame_type == fr.HEADERS and draw(st.booleans()):
        body = struct.pack(">IB", draw(u32), 16) + body
    if flags & fr.FLAG_PADDED and frame_type in (fr.DATA, fr.HEADERS) and draw(st.booleans()):
        pad = draw(st.integers(0, 255))
        body = bytes([pad]) + body + bytes(min(pad, draw(st.integers(0, 255))))
    length = len(body)
    if draw(st.integers(0, 4)) == 0:  # lie about the length: the rest of the wire is read out of step
        length = draw(st.one_of(st.integers(0, len(body) + 20), st.sampled_from([2**14, 2**14 + 1, 2**24 - 1])))
    return fr.frame_header(length, frame_type, flags, draw(stream_ids)) + body


@st.composite
def plausible_frames(draw: st.DrawFn, opened: list[int]) -> bytes:
    """A frame a peer could send: right type for its stream id, sensible flags, true length; a HEADERS frame
    mostly opens the next stream (noted in `opened`), other stream frames mostly go to an opened one."""
    if draw(st.integers(0, 3)) == 0:
        frame_type, stream_id = draw(st.sampled_from(CONNECTION_FRAMES)), 0
        flags = fr.FLAG_ACK if frame_type == fr.PING and draw(st.booleans()) else 0
    else:
        frame_type = draw(st.sampled_from(STREAM_FRAMES)) if opened else fr.HEADERS
        if frame_type == fr.HEADERS and draw(st.integers(0, 3)) > 0:
            stream_id = max(opened, default=-1) + 2
            opened.append(stream_id)
        else:
            stream_id = draw(st.sampled_from(opened or [1, 3, 5]))
        flags = fr.FLAG_END_STREAM if draw(st.integers(0, 5)) == 0 else 0
    if frame_type == fr.HEADERS:
        flags |= fr.FLAG_END_HEADERS
        fields = [(":method", "CONNECT"), (":authority", f"10.0.0.{stream_id}:80")]
        if draw(st.booleans()):
            fields = draw(header_lists())
        body = header_block(fields)
    elif frame_type == fr.DATA:
        body = bytes(draw(st.sampled_from([0, 1, 100, 16_384])))
    elif frame_type == fr.WINDOW_UPDATE:
        body = struct.pack(">I", draw(st.sampled_from([1, 1000, 65_535, 2**31 - 1])))
    elif frame_type == fr.SETTINGS:
        body = draw(payloads(fr.SETTINGS)) if draw(st.booleans()) else b""
    else:
        body = draw(payloads(frame_type))
    return fr.frame_header(len(body), frame_type, flags, stream_id) + body


def preface(client_side: bool) -> bytes:
    """What a peer of `client_side` sends first: a server a SETTINGS, a client the magic and SETTINGS."""
    return (b"" if client_side else fr.PREFACE) + fr.settings_frame([]) + fr.SETTINGS_ACK_FRAME


@st.composite
def wires(draw: st.DrawFn, client_side: bool) -> bytes:
    start = draw(st.sampled_from([preface(client_side)] * 8 + [b"", fr.PREFACE]))
    # On the client side the streams are ours: 1, 3 and 5 (the driver opens them).
    opened: list[int] = [1, 3, 5] if client_side else []
    return start + b"".join(draw(frames(opened)) for _ in range(draw(st.integers(0, 25))))


@st.composite
def mutated(draw: st.DrawFn, wire: bytes) -> bytes:
    """A valid conversation with a few bytes flipped, removed or inserted, or cut short."""
    data = bytearray(wire)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "delete", "insert", "cut"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "cut":
            del data[pos:]
    return bytes(data)


def good_client_wire() -> bytes:
    """A client's valid opening: two CONNECTs, data on both, a half-close, a ping, a window update."""
    client = H2Connection(client=True)
    a = client.open_stream("10.0.0.2:80", [("baggage", "k=v")])
    b = client.open_stream("[fd00::1]:443", [("forwarded", "for=10.0.0.1")])
    wire = client.data_to_send()
    # DATA needs an answered stream on the sending side only: write the frames by hand.
    wire += fr.data_header(a, 5) + b"hello" + fr.data_header(b, 3, end_stream=True) + b"bye"
    return wire + fr.ping_frame(b"pingpong") + fr.window_update_frame(0, 1000) + fr.rst_stream_frame(a, 8)


GOOD_CLIENT_WIRE = good_client_wire()

# ----- the driver: a connection fed the wire, answered as the proxy would -----


class Driver:
    """One side of a connection, fed `wire` in pieces; reacts to events like the proxy's I/O layer does."""

    def __init__(self, client_side: bool) -> None:
        self.conn = H2Connection(client=client_side, settings=SETTINGS)
        self.read = 0
        self.written = len(self.conn.data_to_send())
        self.dead = False
        if client_side:
            for authority in ("10.0.0.2:80", "10.0.0.3:80", "[fd00::1]:443"):
                self.conn.open_stream(authority, [("forwarded", "for=10.0.0.1")])
            self.written = len(self.conn.data_to_send())  # our own requests are not a reply to the peer

    def feed(self, chunk: bytes) -> None:
        self.read += len(chunk)
        try:
            events = self.conn.receive_data(chunk)
        except ProtocolError as err:
            assert not self.dead, "a dead connection raised again"
            assert isinstance(err.error_code, int) and str(err)
            self.dead = True
            self.conn.close(err.error_code, str(err))
            events = []
        if self.dead:
            assert events == []
        for ev in events:
            self._react(ev)
        self.written += len(self.conn.data_to_send())
        self.check_bounds()

    def _react(self, ev: object) -> None:
        conn = self.conn
        try:
            if isinstance(ev, RequestReceived):
                # The proxy answers 200 when it reached the app, 503 otherwise: both, by stream id.
                conn.respond(ev.stream_id, 200 if ev.stream_id % 4 == 1 else 503, end_stream=ev.stream_id % 4 != 1)
            elif isinstance(ev, DataReceived):
                conn.acknowledge_received(ev.stream_id, ev.flow_controlled_length)
                conn.send_data(ev.stream_id, bytes(ev.data[:100]))  # an echo, bounded by what arrived
            elif isinstance(ev, ResponseReceived) and ev.status == 200:
                conn.send_data(ev.stream_id, b"request bytes")
        except StreamStateError:
            pass  # the stream ended or was reset in the same read: the I/O layer drops the write

    def check_bounds(self) -> None:
        conn = self.conn
        assert conn.open_streams <= (3 if conn.client else SETTINGS.max_concurrent_streams)
        assert len(conn._table._recent_resets) <= 1024
        assert conn._blocks._size <= conn._blocks._limit
        assert self.written <= AMPLIFICATION * self.read + SLACK, (self.written, self.read)


def deliver(wire: bytes, cuts: list[int], client_side: bool) -> Driver:
    driver = Driver(client_side)
    bounds = [0, *sorted(c % (len(wire) + 1) for c in cuts), len(wire)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        driver.feed(wire[a:b])
    driver.feed(fr.ping_frame(b"after\0\0\0"))  # later input: a dead connection ignores it, a live one answers
    return driver


cut_lists = st.lists(st.integers(min_value=0), max_size=8)


@pytest.mark.parametrize("client_side", [False, True], ids=["server", "client"])
@fuzz_settings(150)
@given(data=st.data(), cuts=cut_lists)
def test_hostile_frame_sequences_raise_only_protocol_errors_and_stay_bounded(
    client_side: bool, data: st.DataObject, cuts: list[int]
) -> None:
    deliver(data.draw(wires(client_side)), cuts, client_side)


@fuzz_settings(150)
@given(wire=mutated(GOOD_CLIENT_WIRE), cuts=cut_lists)
@example(wire=GOOD_CLIENT_WIRE, cuts=[])
def test_a_mutated_client_conversation_raises_only_protocol_errors(wire: bytes, cuts: list[int]) -> None:
    deliver(wire, cuts, client_side=False)


@fuzz_settings(60)
@given(n=st.integers(1, 3000), frame=frames())
def test_a_flood_of_one_frame_costs_bounded_memory_and_output(n: int, frame: bytes) -> None:
    driver = deliver(preface(False) + frame * min(n, 200_000 // max(len(frame), 1)), [], client_side=False)
    if not driver.dead:
        assert driver.conn.open_streams <= SETTINGS.max_concurrent_streams


def test_a_valid_conversation_passes_the_driver_alive() -> None:
    """The harness itself: well-formed input leaves the connection alive with its streams."""
    driver = deliver(GOOD_CLIENT_WIRE, [], client_side=False)
    assert not driver.dead and driver.written > 0  # it answered (the requests, the ping)


def test_after_a_protocol_error_the_connection_sent_goaway_and_ignores_input() -> None:
    driver = deliver(preface(False) + fr.frame_header(0, fr.PING, 0, 1), [], client_side=False)
    assert driver.dead
    conn = H2Connection(client=False)
    conn.receive_data(preface(False))
    with pytest.raises(ProtocolError) as err:
        conn.receive_data(fr.frame_header(0, fr.PING, 0, 1))
    assert err.value.error_code == ErrorCode.PROTOCOL_ERROR
    assert conn.receive_data(fr.ping_frame(b"12345678")) == []


@fuzz_settings(40)
@given(sizes=st.lists(st.integers(0, 16_384), min_size=1, max_size=40), stream_id=st.sampled_from([1, 3]))
def test_a_header_block_that_never_ends_is_refused_before_it_outgrows_its_limit(
    sizes: list[int], stream_id: int
) -> None:
    """The CONTINUATION flood (CVE-2024-27316 and kin): a HEADERS frame without END_HEADERS, then CONTINUATION
    frames without it either, for ever. What is buffered stays within the assembler's limit; past it, a
    connection error."""
    driver = Driver(client_side=False)
    driver.feed(preface(False) + fr.frame_header(10, fr.HEADERS, 0, 1) + bytes(10))
    for size in sizes:
        driver.feed(fr.frame_header(size, fr.CONTINUATION, 0, stream_id) + bytes(size))
        if driver.dead:
            break
    if not driver.dead:
        assert stream_id == 1 and 10 + sum(sizes) <= driver.conn._blocks._limit  # else: refused, as it must be
