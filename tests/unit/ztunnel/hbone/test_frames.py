"""HTTP/2 framing: encoders agree with the parser, and the reader cuts any split of the bytes the same way."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ztunnel.hbone import ErrorCode, ProtocolError
from ztunnel.hbone import frames as fr


def test_data_header_describes_the_payload_that_follows_it() -> None:
    header = fr.data_header(7, 1234, end_stream=True)
    assert len(header) == fr.FRAME_HEADER_SIZE
    assert fr.parse_frame_header(header) == (1234, fr.DATA, fr.FLAG_END_STREAM, 7)
    assert fr.parse_frame_header(fr.data_header(2**31 - 1, 0)) == (0, fr.DATA, 0, 2**31 - 1)


def test_control_frames_round_trip_through_the_reader() -> None:
    wire = (
        fr.settings_frame([(fr.SETTINGS_INITIAL_WINDOW_SIZE, 4 << 20), (fr.SETTINGS_MAX_FRAME_SIZE, 16384)])
        + fr.SETTINGS_ACK_FRAME
        + fr.window_update_frame(0, 1000)
        + fr.rst_stream_frame(3, ErrorCode.CANCEL)
        + fr.goaway_frame(5, ErrorCode.NO_ERROR, b"bye")
        + fr.ping_frame(b"12345678", ack=True)
    )
    frames = fr.FrameReader(16384, expect_preface=False).feed(wire)
    assert [(t, f, s) for t, f, s, _ in frames] == [
        (fr.SETTINGS, 0, 0),
        (fr.SETTINGS, fr.FLAG_ACK, 0),
        (fr.WINDOW_UPDATE, 0, 0),
        (fr.RST_STREAM, 0, 3),
        (fr.GOAWAY, 0, 0),
        (fr.PING, fr.FLAG_ACK, 0),
    ]
    assert fr.parse_settings(frames[0][3]) == [
        (fr.SETTINGS_INITIAL_WINDOW_SIZE, 4 << 20),
        (fr.SETTINGS_MAX_FRAME_SIZE, 16384),
    ]
    assert fr.parse_u32(frames[2][3], "WINDOW_UPDATE") == 1000
    assert fr.parse_u32(frames[3][3], "RST_STREAM") == ErrorCode.CANCEL
    assert fr.parse_goaway(frames[4][3]) == (5, ErrorCode.NO_ERROR, b"bye")
    assert bytes(frames[5][3]) == b"12345678"


def test_a_large_header_block_is_split_into_continuation_frames() -> None:
    block = bytes(40_000)
    frames = fr.FrameReader(16384, expect_preface=False).feed(
        b"".join(fr.headers_frames(1, block, 16384, end_stream=True))
    )
    assert [(t, f) for t, f, _, _ in frames] == [
        (fr.HEADERS, fr.FLAG_END_STREAM),
        (fr.CONTINUATION, 0),
        (fr.CONTINUATION, fr.FLAG_END_HEADERS),
    ]
    assert b"".join(bytes(p) for _, _, _, p in frames) == block


def test_whole_frames_are_views_of_the_received_bytes_not_copies() -> None:
    wire = fr.data_header(1, 5) + b"hello" + fr.data_header(1, 5) + b"world"
    frames = fr.FrameReader(16384, expect_preface=False).feed(wire)
    payloads = [p for _, _, _, p in frames]
    assert payloads == [b"hello", b"world"]
    assert all(isinstance(p, memoryview) and p.obj is wire for p in payloads)


def test_a_frame_above_our_max_frame_size_is_a_connection_error() -> None:
    reader = fr.FrameReader(16384, expect_preface=False)
    with pytest.raises(ProtocolError) as err:
        reader.feed(fr.data_header(1, 16385))  # detected from the header alone, before the payload
    assert err.value.error_code == ErrorCode.FRAME_SIZE_ERROR


def test_a_server_rejects_a_client_that_does_not_speak_http2() -> None:
    reader = fr.FrameReader(16384, expect_preface=True)
    assert reader.feed(fr.PREFACE[:10]) == []
    with pytest.raises(ProtocolError) as err:
        reader.feed(b"GET / HTTP/1.1\r\n")
    assert err.value.error_code == ErrorCode.PROTOCOL_ERROR


def test_padding_is_stripped_and_bad_padding_is_a_connection_error() -> None:
    assert fr.strip_padding(b"\x03abc\0\0\0", "DATA") == b"abc"
    with pytest.raises(ProtocolError):
        fr.strip_padding(b"\x05abc", "DATA")


def _wire() -> bytes:
    return (
        fr.PREFACE
        + fr.settings_frame([(fr.SETTINGS_ENABLE_PUSH, 0)])
        + b"".join(fr.headers_frames(1, bytes(range(200)) * 100, 16384, end_stream=False))
        + fr.data_header(1, 0)
        + fr.data_header(1, 3)
        + b"abc"
        + fr.window_update_frame(1, 99)
        + fr.data_header(3, 16384)
        + bytes(16384)
        + fr.ping_frame(b"pingpong")
    )


def _frames(chunks: list[bytes]) -> list[tuple[int, int, int, bytes]]:
    reader = fr.FrameReader(16384, expect_preface=True)
    return [(t, f, s, bytes(p)) for chunk in chunks for t, f, s, p in reader.feed(chunk)]


def test_frames_split_at_every_byte_boundary_come_out_the_same() -> None:
    wire = _wire()
    whole = _frames([wire])
    assert [t for t, _, _, _ in whole] == [
        fr.SETTINGS,
        fr.HEADERS,
        fr.CONTINUATION,
        fr.DATA,
        fr.DATA,
        fr.WINDOW_UPDATE,
        fr.DATA,
        fr.PING,
    ]
    for cut in range(len(wire) + 1):
        assert _frames([wire[:cut], wire[cut:]]) == whole, cut
    assert _frames([wire[i : i + 1] for i in range(len(wire))]) == whole


@given(st.lists(st.integers(min_value=0, max_value=len(_wire())), max_size=30))
def test_frames_split_anywhere_come_out_the_same(cuts: list[int]) -> None:
    wire = _wire()
    bounds = [0, *sorted(cuts), len(wire)]
    assert _frames([wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]) == _frames([wire])
