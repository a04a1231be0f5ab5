"""HTTP/2 framing (RFC 9113 section 4 and 6): constants, frame encoders and the frame reader.

Only what HBONE needs, written for the data path. A DATA frame is encoded as its 9-byte header alone
(`data_header`) so the payload is never copied: the caller queues `[header, payload]` and hands both to
`writelines`. `FrameReader` cuts incoming bytes into frames and returns payloads as memoryviews over the
received `bytes`; only a frame that straddles two reads is joined (one copy of that frame), so the
cost stays linear however the bytes are split.

Nothing here knows about streams or settings beyond the frame size limit; `connection.py` gives the
frames meaning.
"""

from __future__ import annotations

import struct
from typing import Final

from ztunnel.hbone.errors import ErrorCode, ProtocolError

Payload = bytes | memoryview
"""A frame payload as returned by `FrameReader`; memoryviews point into immutable `bytes`."""

Frame = tuple[int, int, int, Payload]
"""(frame type, flags, stream id, payload) of one complete frame."""

# Frame types (RFC 9113 section 6). Plain ints rather than an enum: they are compared per frame.
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags; ACK and END_STREAM share a bit but belong to different frame types.
FLAG_END_STREAM: Final = 0x1
FLAG_ACK: Final = 0x1
FLAG_END_HEADERS: Final = 0x4
FLAG_PADDED: Final = 0x8
FLAG_PRIORITY: Final = 0x20

# SETTINGS identifiers (RFC 9113 section 6.5.2; 0x8 is RFC 8441's extended CONNECT).
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL: Final = 0x8

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What a client sends before its first SETTINGS frame."""

FRAME_HEADER_SIZE: Final = 9
DEFAULT_WINDOW_SIZE: Final = 65_535
MAX_WINDOW_SIZE: Final = 2**31 - 1
MIN_MAX_FRAME_SIZE: Final = 16_384
MAX_MAX_FRAME_SIZE: Final = 2**24 - 1
MAX_STREAM_ID: Final = 2**31 - 1

# The 24-bit length and the 8-bit type travel as one big-endian u32 (length << 8 | type): one
# struct call per frame instead of slicing out a 3-byte integer.
_HEADER: Final = struct.Struct(">IBI")
_U32: Final = struct.Struct(">I")
_U32_U32: Final = struct.Struct(">II")
_SETTING: Final = struct.Struct(">HI")

SETTINGS_ACK_FRAME: Final = _HEADER.pack((0 << 8) | SETTINGS, FLAG_ACK, 0)


def frame_header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte header of any frame."""
    return _HEADER.pack((length << 8) | frame_type, flags, stream_id)


def data_header(stream_id: int, length: int, end_stream: bool = False) -> bytes:
    """The header of a DATA frame whose `length`-byte payload the caller sends right after it."""
    return _HEADER.pack(length << 8, FLAG_END_STREAM if end_stream else 0, stream_id)


def headers_frames(stream_id: int, block: bytes, max_frame_size: int, end_stream: bool) -> list[bytes]:
    """A header block as HEADERS plus as many CONTINUATION frames as the peer's frame size needs."""
    end = FLAG_END_STREAM if end_stream else 0
    if len(block) <= max_frame_size:
        return [frame_header(len(block), HEADERS, end | FLAG_END_HEADERS, stream_id) + block]
    out: list[bytes] = []
    chunks = [block[i : i + max_frame_size] for i in range(0, len(block), max_frame_size)]
    for i, chunk in enumerate(chunks):
        last = FLAG_END_HEADERS if i == len(chunks) - 1 else 0
        if i == 0:
            out.append(frame_header(len(chunk), HEADERS, end | last, stream_id) + chunk)
        else:
            out.append(frame_header(len(chunk), CONTINUATION, last, stream_id) + chunk)
    return out


def settings_frame(settings: list[tuple[int, int]]) -> bytes:
    """A SETTINGS frame (not an ACK) carrying `(identifier, value)` pairs."""
    body = b"".join(_SETTING.pack(ident, value) for ident, value in settings)
    return frame_header(len(body), SETTINGS, 0, 0) + body


def window_update_frame(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE for one stream, or for the connection when `stream_id` is 0."""
    return _HEADER.pack((4 << 8) | WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    """An RST_STREAM frame."""
    return _HEADER.pack((4 << 8) | RST_STREAM, 0, stream_id) + _U32.pack(error_code)


def goaway_frame(last_stream_id: int, error_code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame; `debug` is opaque diagnostic data for the peer's logs."""
    body = _U32_U32.pack(last_stream_id, error_code) + debug
    return frame_header(len(body), GOAWAY, 0, 0) + body


def ping_frame(opaque: bytes, ack: bool = False) -> bytes:
    """A PING frame with 8 bytes of opaque data, or its ACK echoing them."""
    if len(opaque) != 8:
        raise ValueError("PING carries exactly 8 bytes of opaque data")
    return frame_header(8, PING, FLAG_ACK if ack else 0, 0) + opaque


def parse_frame_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the frame header at `offset`; the reserved bit is dropped."""
    length_type, flags, stream_id = _HEADER.unpack_from(buf, offset)
    return length_type >> 8, length_type & 0xFF, flags, stream_id & 0x7FFFFFFF


def strip_padding(payload: Payload, frame_name: str) -> Payload:
    """The payload of a PADDED frame without its pad-length byte and padding."""
    if not payload:
        raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, f"PADDED {frame_name} frame has no pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"{frame_name} padding ({pad}) exceeds the frame")
    return payload[1 : len(payload) - pad]


def parse_settings(payload: Payload) -> list[tuple[int, int]]:
    """The `(identifier, value)` pairs of a SETTINGS frame, in order (later values win)."""
    if len(payload) % 6:
        raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, f"SETTINGS length {len(payload)} is not a multiple of 6")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def parse_u32(payload: Payload, frame_name: str) -> int:
    """The single 32-bit field of WINDOW_UPDATE and RST_STREAM (reserved bit kept: callers mask it)."""
    if len(payload) != 4:
        raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, f"{frame_name} length {len(payload)} is not 4")
    value: int = _U32.unpack_from(payload)[0]
    return value


def parse_goaway(payload: Payload) -> tuple[int, int, bytes]:
    """(last stream id, error code, debug data) of a GOAWAY frame."""
    if len(payload) < 8:
        raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, f"GOAWAY length {len(payload)} is below 8")
    last, code = _U32_U32.unpack_from(payload)
    return last & 0x7FFFFFFF, code, bytes(payload[8:])


class FrameReader:
    """Cuts a byte stream into whole frames, keeping at most one incomplete frame between reads.

    A frame that arrives whole is returned as a memoryview into the `bytes` passed to `feed`, which is
    immutable, so handing it out is safe. A frame split across reads is collected as views of the
    pieces and joined once when its last byte arrives: each byte is copied at most once, never
    re-sliced per read. A server reader first checks the client's connection preface.
    """

    __slots__ = ("max_frame_size", "_preface", "_partial_header", "_pending", "_chunks", "_have")

    def __init__(self, max_frame_size: int, expect_preface: bool) -> None:
        self.max_frame_size = max_frame_size
        """Frames longer than this are a FRAME_SIZE_ERROR (our SETTINGS_MAX_FRAME_SIZE)."""
        self._preface = PREFACE if expect_preface else b""
        self._partial_header = b""  # fewer than 9 header bytes of the next frame
        self._pending: tuple[int, int, int, int] | None = None  # header of a frame awaiting payload
        self._chunks: list[Payload] = []
        self._have = 0

    def feed(self, data: bytes) -> list[Frame]:
        """All frames completed by `data`, in order. Raises `ProtocolError` on an oversized frame."""
        frames: list[Frame] = []
        view = memoryview(data)
        pos = 0
        end = len(data)
        if self._preface:
            pos = self._check_preface(data)
            if self._preface:
                return frames
        if self._partial_header:
            need = FRAME_HEADER_SIZE - len(self._partial_header)
            if end - pos < need:
                self._partial_header += data[pos:]
                return frames
            header = self._partial_header + data[pos : pos + need]
            pos += need
            self._partial_header = b""
            self._start_pending(header, 0)
        if self._pending is not None:
            frame_type, flags, stream_id, length = self._pending
            need = length - self._have
            if end - pos < need:
                self._chunks.append(view[pos:])
                self._have += end - pos
                return frames
            self._chunks.append(view[pos : pos + need])
            pos += need
            frames.append((frame_type, flags, stream_id, b"".join(self._chunks)))
            self._pending = None
            self._chunks = []
            self._have = 0
        unpack = _HEADER.unpack_from
        limit = self.max_frame_size
        while end - pos >= FRAME_HEADER_SIZE:
            length_type, flags, stream_id = unpack(data, pos)
            length = length_type >> 8
            start = pos + FRAME_HEADER_SIZE
            stop = start + length
            if stop > end:
                self._start_pending(data, pos)
                self._chunks.append(view[start:])
                self._have = end - start
                return frames
            if length > limit:
                self._too_large(length, length_type & 0xFF)
            frames.append((length_type & 0xFF, flags, stream_id & 0x7FFFFFFF, view[start:stop]))
            pos = stop
        if pos < end:
            self._partial_header = data[pos:]
        return frames

    def _start_pending(self, buf: bytes, offset: int) -> None:
        length, frame_type, flags, stream_id = parse_frame_header(buf, offset)
        if length > self.max_frame_size:
            self._too_large(length, frame_type)
        self._pending = (frame_type, flags, stream_id, length)

    def _too_large(self, length: int, frame_type: int) -> None:
        # RFC 9113 4.2 allows a stream error for an oversized DATA frame, but a peer that ignores our
        # SETTINGS_MAX_FRAME_SIZE frames wrongly for every stream, and containing it would mean
        # reading and discarding up to 16 MiB per frame: treat it as the connection error it is.
        raise ProtocolError(
            ErrorCode.FRAME_SIZE_ERROR,
            f"frame of type 0x{frame_type:x} is {length} bytes, above SETTINGS_MAX_FRAME_SIZE {self.max_frame_size}",
        )

    def _check_preface(self, data: bytes) -> int:
        take = min(len(self._preface), len(data))
        if data[:take] != self._preface[:take]:
            raise ProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                "the client did not send the HTTP/2 connection preface (not HTTP/2, or TLS without ALPN h2?)",
            )
        self._preface = self._preface[take:]
        return take
