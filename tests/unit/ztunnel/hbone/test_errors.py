"""Errors: a peer's mistake on one stream resets that stream only; a broken connection raises ProtocolError."""

from __future__ import annotations

import pytest
from hpack import Encoder

from tests.unit.ztunnel.hbone.conftest import Pair, data_of
from ztunnel.hbone import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    H2Connection,
    H2Settings,
    ProtocolError,
    RequestReceived,
    StreamReset,
    WindowUpdated,
)
from ztunnel.hbone import frames as fr

CONNECT = [(":method", "CONNECT"), (":authority", "10.0.0.2:80")]


class RawClient:
    """A real server driven by hand-written client frames, to say what a well-behaved client never would."""

    def __init__(self, settings: H2Settings | None = None) -> None:
        self.server = H2Connection(client=False, settings=settings)
        self.encoder = Encoder()
        self.send(fr.PREFACE + fr.settings_frame([]) + fr.SETTINGS_ACK_FRAME)
        self.sent()

    def send(self, raw: bytes) -> list[Event]:
        return self.server.receive_data(raw)

    def headers(self, stream_id: int, fields: list[tuple[str, str]], end_stream: bool = False) -> bytes:
        return b"".join(fr.headers_frames(stream_id, self.encoder.encode(fields), 16384, end_stream))

    def sent(self) -> list[tuple[int, int, int, bytes]]:
        """The frames the server wrote since the last call."""
        frames = fr.FrameReader(fr.MAX_MAX_FRAME_SIZE, expect_preface=False).feed(self.server.data_to_send())
        return [(t, f, s, bytes(p)) for t, f, s, p in frames]


def resets(frames: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int]]:
    return [(s, fr.parse_u32(p, "RST_STREAM")) for t, _, s, p in frames if t == fr.RST_STREAM]


# ----- stream errors stay on their stream -----


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ([(":method", "CONNECT")], "without :authority"),
        ([*CONNECT, (":path", "/")], "with :path"),
        ([*CONNECT, (":scheme", "https")], "with :scheme"),
        ([(":method", "CONNECT"), (":authority", "10.0.0.2")], "authority without a port"),
        ([*CONNECT, ("X-Upper", "1")], "upper-case field name"),
        ([*CONNECT, ("connection", "keep-alive")], "connection-specific field"),
        ([("baggage", "x"), *CONNECT], "pseudo-header after a regular field"),
        ([*CONNECT, (":method", "CONNECT")], "repeated pseudo-header"),
        ([*CONNECT, ("baggage", " padded")], "value with surrounding space"),
    ],
)
def test_a_malformed_request_resets_only_its_stream(fields: list[tuple[str, str]], why: str) -> None:
    raw = RawClient()
    good = raw.send(raw.headers(1, CONNECT))
    bad = raw.send(raw.headers(3, fields))
    after = raw.send(raw.headers(5, CONNECT))  # the HPACK state survived the bad block
    assert good == [RequestReceived(1, "10.0.0.2:80", [])]
    assert [(type(e), e.stream_id, e.error_code, e.remote) for e in bad if isinstance(e, StreamReset)] == [
        (StreamReset, 3, ErrorCode.PROTOCOL_ERROR, False)
    ], why
    assert after == [RequestReceived(5, "10.0.0.2:80", [])]
    assert resets(raw.sent()) == [(3, ErrorCode.PROTOCOL_ERROR)]
    for sid in (1, 5):
        raw.server.respond(sid, 200)
        raw.server.send_data(sid, b"ok")
    assert raw.send(fr.data_header(1, 2) + b"hi") == [DataReceived(1, b"hi", 2)]
    assert [s for t, _, s, _ in raw.sent() if t == fr.DATA] == [1, 5]


def test_a_non_connect_request_is_answered_405_and_reset() -> None:
    raw = RawClient()
    events = raw.send(raw.headers(1, [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a")]))
    assert [(e.stream_id, e.error_code) for e in events if isinstance(e, StreamReset)] == [(1, ErrorCode.NO_ERROR)]
    frames = raw.sent()
    assert [(t, f & fr.FLAG_END_STREAM) for t, f, _, _ in frames] == [(fr.HEADERS, 1), (fr.RST_STREAM, 0)]


def test_streams_beyond_our_concurrency_limit_are_refused() -> None:
    raw = RawClient(H2Settings(max_concurrent_streams=1))
    assert raw.send(raw.headers(1, CONNECT)) == [RequestReceived(1, "10.0.0.2:80", [])]
    raw.send(raw.headers(3, CONNECT))
    assert resets(raw.sent()) == [(3, ErrorCode.REFUSED_STREAM)]


def test_data_after_end_stream_resets_only_that_stream() -> None:
    pair = Pair()
    a, b = pair.open(), pair.open()
    pair.client.end_stream(a)
    events = pair.to_server(fr.data_header(a, 3) + b"bad")
    assert events == [StreamReset(a, ErrorCode.STREAM_CLOSED, False, "DATA after END_STREAM")]
    assert pair.take_client() == [StreamReset(a, ErrorCode.STREAM_CLOSED, True)]
    pair.client.send_data(b, b"fine")
    pair.server.send_data(b, b"also fine")
    pair.pump()
    assert data_of(pair.take_server(), b) == b"fine"
    assert data_of(pair.take_client(), b) == b"also fine"


def test_data_beyond_the_stream_window_resets_only_that_stream() -> None:
    pair = Pair(server=H2Settings(initial_window_size=1000))
    a, b = pair.open(), pair.open()
    events = pair.to_server(fr.data_header(a, 1001) + bytes(1001))
    assert [(e.stream_id, e.error_code) for e in events if isinstance(e, StreamReset)] == [
        (a, ErrorCode.FLOW_CONTROL_ERROR)
    ]
    assert pair.client.send_data(b, bytes(1000)) == 1000
    pair.pump()
    assert len(data_of(pair.take_server(), b)) == 1000


def test_a_malformed_response_resets_only_its_stream() -> None:
    pair = Pair()
    b = pair.open()
    a = pair.client.open_stream("10.0.0.2:80")  # requested, not yet answered
    block = Encoder().encode([(":status", "2000", True)])  # never indexed: the client's table stays in step
    events = pair.to_client(b"".join(fr.headers_frames(a, block, 16384, end_stream=False)))
    assert [(e.stream_id, e.error_code, e.remote) for e in events if isinstance(e, StreamReset)] == [
        (a, ErrorCode.PROTOCOL_ERROR, False)
    ]
    pair.server.send_data(b, b"unaffected")
    pair.pump()
    assert data_of(pair.take_client(), b) == b"unaffected"


def test_a_peer_reset_ends_only_that_stream() -> None:
    pair = Pair()
    a, b = pair.open(), pair.open()
    pair.server.reset_stream(a, ErrorCode.CONNECT_ERROR)
    pair.server.send_data(b, b"still here")
    pair.pump()
    assert pair.take_client() == [StreamReset(a, ErrorCode.CONNECT_ERROR, True), DataReceived(b, b"still here", 10)]


def test_data_in_flight_for_a_stream_we_reset_is_dropped_and_its_window_returned() -> None:
    pair = Pair(client=H2Settings(connection_window_size=65535))
    a, b = pair.open(), pair.open()
    assert pair.server.send_data(a, bytes(65535)) == 65535  # the whole connection window
    pair.client.reset_stream(a)  # before those bytes arrive
    pair.pump()
    assert [e for e in pair.take_client() if not isinstance(e, WindowUpdated)] == []  # no DATA, no RST back
    assert WindowUpdated(0) in pair.take_server()
    assert pair.server.send_data(b, b"more") == 4


def test_frames_for_a_closed_stream_reset_it_without_harm() -> None:
    raw = RawClient()
    raw.send(raw.headers(1, CONNECT, end_stream=True))
    raw.server.respond(1, 200, end_stream=True)  # both sides done: stream 1 is closed
    raw.sent()
    assert raw.send(fr.data_header(1, 1) + b"x") == [
        StreamReset(1, ErrorCode.STREAM_CLOSED, False, "DATA on a closed stream")
    ]
    assert resets(raw.sent()) == [(1, ErrorCode.STREAM_CLOSED)]
    assert raw.send(raw.headers(3, CONNECT)) == [RequestReceived(3, "10.0.0.2:80", [])]


def test_a_stream_window_overflow_resets_only_that_stream() -> None:
    pair = Pair()
    a, b = pair.open(), pair.open()
    events = pair.to_client(fr.window_update_frame(a, 2**31 - 1))
    assert [(e.stream_id, e.error_code) for e in events if isinstance(e, StreamReset)] == [
        (a, ErrorCode.FLOW_CONTROL_ERROR)
    ]
    assert pair.client.send_data(b, b"x") == 1


# ----- connection errors raise -----


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (fr.data_header(0, 1) + b"x", ErrorCode.PROTOCOL_ERROR),
        (fr.data_header(7, 1) + b"x", ErrorCode.PROTOCOL_ERROR),  # idle stream
        (fr.frame_header(7, fr.PING, 0, 0) + bytes(7), ErrorCode.FRAME_SIZE_ERROR),
        (fr.frame_header(8, fr.PING, 0, 1) + bytes(8), ErrorCode.PROTOCOL_ERROR),
        (fr.frame_header(5, fr.SETTINGS, 0, 0) + bytes(5), ErrorCode.FRAME_SIZE_ERROR),
        (fr.frame_header(6, fr.SETTINGS, fr.FLAG_ACK, 0) + bytes(6), ErrorCode.FRAME_SIZE_ERROR),
        (fr.settings_frame([(fr.SETTINGS_INITIAL_WINDOW_SIZE, 2**31)]), ErrorCode.FLOW_CONTROL_ERROR),
        (fr.settings_frame([(fr.SETTINGS_MAX_FRAME_SIZE, 100)]), ErrorCode.PROTOCOL_ERROR),
        (fr.settings_frame([(fr.SETTINGS_ENABLE_PUSH, 2)]), ErrorCode.PROTOCOL_ERROR),
        (fr.window_update_frame(0, 0), ErrorCode.PROTOCOL_ERROR),
        (fr.window_update_frame(0, 2**31 - 1), ErrorCode.FLOW_CONTROL_ERROR),
        (fr.frame_header(3, fr.WINDOW_UPDATE, 0, 0) + bytes(3), ErrorCode.FRAME_SIZE_ERROR),
        (fr.rst_stream_frame(0, 0), ErrorCode.PROTOCOL_ERROR),
        (fr.rst_stream_frame(9, 0), ErrorCode.PROTOCOL_ERROR),  # idle stream
        (fr.frame_header(5, fr.HEADERS, fr.FLAG_END_HEADERS, 1) + b"\xff\xff\xff\xff\xff", ErrorCode.COMPRESSION_ERROR),
        (fr.frame_header(1, fr.HEADERS, 0, 1) + b"\x82" + fr.data_header(1, 0), ErrorCode.PROTOCOL_ERROR),
        (fr.frame_header(1, fr.CONTINUATION, fr.FLAG_END_HEADERS, 1) + b"\x82", ErrorCode.PROTOCOL_ERROR),
        (fr.frame_header(1, fr.HEADERS, fr.FLAG_END_HEADERS, 2) + b"\x82", ErrorCode.PROTOCOL_ERROR),  # even id
        (fr.frame_header(4, fr.DATA, fr.FLAG_PADDED, 1) + b"\x09abc", ErrorCode.PROTOCOL_ERROR),
        (fr.data_header(1, 16385) + bytes(16385), ErrorCode.FRAME_SIZE_ERROR),
        (fr.frame_header(4, fr.PUSH_PROMISE, fr.FLAG_END_HEADERS, 1) + bytes(4), ErrorCode.PROTOCOL_ERROR),
        (fr.frame_header(7, fr.GOAWAY, 0, 0) + bytes(7), ErrorCode.FRAME_SIZE_ERROR),
    ],
)
def test_a_broken_connection_raises_protocol_error(raw: bytes, code: ErrorCode) -> None:
    client = RawClient()
    client.send(client.headers(1, CONNECT))
    with pytest.raises(ProtocolError) as err:
        client.send(raw)
    assert err.value.error_code == code
    assert client.send(fr.ping_frame(bytes(8))) == []  # nothing more is processed


def test_data_beyond_the_connection_window_is_a_connection_error() -> None:
    raw = RawClient(H2Settings(connection_window_size=65535, initial_window_size=1 << 20))
    raw.send(raw.headers(1, CONNECT))
    for _ in range(3):
        raw.send(fr.data_header(1, 16384) + bytes(16384))
    with pytest.raises(ProtocolError) as err:
        raw.send(fr.data_header(1, 16384) + bytes(16384))
    assert err.value.error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_a_server_requires_the_preface_then_settings() -> None:
    with pytest.raises(ProtocolError):
        H2Connection(client=False).receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ProtocolError):
        H2Connection(client=False).receive_data(fr.PREFACE + fr.ping_frame(bytes(8)))


def test_the_io_layer_turns_a_protocol_error_into_goaway() -> None:
    pair = Pair()
    pair.open()
    with pytest.raises(ProtocolError) as err:
        pair.server.receive_data(fr.frame_header(7, fr.PING, 0, 0) + bytes(7))
    pair.server.close(err.value.error_code, str(err.value))
    pair.pump()
    events = pair.take_client()
    assert isinstance(events[-1], ConnectionTerminated)
    assert (events[-1].error_code, events[-1].last_stream_id) == (ErrorCode.FRAME_SIZE_ERROR, 1)
    assert b"PING length 7" in events[-1].debug
