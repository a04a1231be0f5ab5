"""HBONE header blocks: building CONNECT requests and responses, decoding and validating what arrives.

HPACK itself is the `hpack` package; this module reassembles header blocks split over CONTINUATION
frames and decides what a well-formed HBONE header list is (RFC 9113 section 8.2-8.5). A request is
`:method CONNECT` plus `:authority ip:port`, with no `:scheme` or `:path`; a response carries
`:status`. A malformed list raises `MalformedHeadersError`, which the connection turns into a reset
of that one stream. A block HPACK cannot decode raises
`ProtocolError(COMPRESSION_ERROR)` instead: the shared decoding table is then out of step with the
peer's, so no later block on the connection can be trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hpack import Decoder, HPACKError

from meshlet_contracts.identity import IdentityError, parse_port
from ztunnel.hbone import frames as fr
from ztunnel.hbone.errors import ErrorCode, ProtocolError

HeaderList = list[tuple[str, str]]
"""Regular (non-pseudo) header fields, names in lower case, in the order they were sent."""

# RFC 9110 token characters, lower case only: HTTP/2 forbids upper-case field names (RFC 9113 8.2.1).
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
# No NUL, CR or LF anywhere and no surrounding whitespace (RFC 9113 8.2.1).
_VALUE = re.compile(rb"(?:[^\x00\r\n\t ](?:[^\x00\r\n]*[^\x00\r\n\t ])?)?\Z")
# Hop-by-hop fields HTTP/2 forbids (RFC 9113 8.2.2); "te" is allowed only as "trailers".
_CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
_REQUEST_PSEUDO = frozenset({b":method", b":authority", b":scheme", b":path", b":protocol"})


class MalformedHeadersError(ValueError):
    """A header list that breaks HTTP/2's or HBONE's rules; it concerns one stream only."""


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request head."""

    method: str
    authority: str
    """The tunnel's target, `host:port`; empty only for non-CONNECT methods."""
    headers: HeaderList


def decode_block(decoder: Decoder, block: bytes | memoryview) -> list[tuple[bytes, bytes]]:
    """Decode one complete header block; any HPACK failure is a connection error."""
    try:
        # raw=True: UTF-8 checks are ours to make per stream; hpack's would look like a table error.
        return [(name, value) for name, value in decoder.decode(bytes(block), raw=True)]
    except HPACKError as err:
        raise ProtocolError(ErrorCode.COMPRESSION_ERROR, f"cannot decode a header block: {err}") from err


def connect_request(authority: str, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header list of an HBONE CONNECT request (RFC 9113 8.5: no :scheme, no :path)."""
    check_authority(authority)
    return [(":method", "CONNECT"), (":authority", authority), *_checked_local(headers)]


def response(status: int, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The header list of a response with `status`."""
    if not 100 <= status <= 599:
        raise ValueError(f"HTTP status {status} is outside 100-599")
    return [(":status", str(status)), *_checked_local(headers)]


def check_authority(authority: str) -> None:
    """Raise `MalformedHeadersError` unless `authority` is `host:port` (IPv6 hosts in brackets)."""
    host, sep, port = authority.rpartition(":")
    # The port parser inbound uses: ASCII digits only (isdigit() also takes '٨٠٨٠', which int() reads as 8080).
    if not sep or not host or not _is_port(port):
        raise MalformedHeadersError(f"CONNECT authority {authority!r} is not host:port")
    # CR, LF and NUL too: a field value may not carry them (RFC 9113 8.2.1), so the peer would reset the stream.
    if host.startswith("[") != host.endswith("]") or any(c in host for c in " @/\t\r\n\0"):
        raise MalformedHeadersError(f"CONNECT authority {authority!r} has an invalid host")


def _is_port(text: str) -> bool:
    try:
        parse_port(text)
    except IdentityError:
        return False
    return True


def parse_request(fields: Sequence[tuple[bytes, bytes]]) -> Request:
    """Validate a request head; a CONNECT must name its target and nothing else (RFC 9113 8.5)."""
    pseudo, headers = _split(fields, _REQUEST_PSEUDO)
    method = pseudo.get(":method")
    if method is None:
        raise MalformedHeadersError("request without :method")
    if method != "CONNECT":
        # Not an HBONE tunnel, but possibly a well-formed request: the caller answers 405.
        if ":scheme" not in pseudo or ":path" not in pseudo:
            raise MalformedHeadersError(f"{method} request without :scheme or :path")
        return Request(method, pseudo.get(":authority", ""), headers)
    if ":scheme" in pseudo or ":path" in pseudo or ":protocol" in pseudo:
        raise MalformedHeadersError("CONNECT request with :scheme, :path or :protocol")
    authority = pseudo.get(":authority")
    if authority is None:
        raise MalformedHeadersError("CONNECT request without :authority")
    check_authority(authority)
    return Request(method, authority, headers)


def parse_response(fields: Sequence[tuple[bytes, bytes]]) -> tuple[int, HeaderList]:
    """(status, headers) of a response head."""
    pseudo, headers = _split(fields, frozenset({b":status"}))
    status = pseudo.get(":status")
    if status is None or len(status) != 3 or not status.isdigit() or not 100 <= int(status) <= 599:
        raise MalformedHeadersError(f"response with invalid :status {status!r}")
    return int(status), headers


def check_trailers(fields: Sequence[tuple[bytes, bytes]]) -> None:
    """Trailers carry no pseudo-header fields (RFC 9113 8.1)."""
    _split(fields, frozenset())


def _split(fields: Sequence[tuple[bytes, bytes]], allowed: frozenset[bytes]) -> tuple[dict[str, str], HeaderList]:
    pseudo: dict[str, str] = {}
    headers: HeaderList = []
    for name, value in fields:
        if not _VALUE.match(value):
            raise MalformedHeadersError(f"field {name!r} has a value with NUL, CR, LF or surrounding space")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedHeadersError(f"field {name!r} has a value that is not UTF-8") from None
        if name[:1] == b":":
            if headers:
                raise MalformedHeadersError(f"pseudo-header {name!r} after a regular field")
            if name not in allowed:
                raise MalformedHeadersError(f"pseudo-header {name!r} is not allowed here")
            key = name.decode("ascii")
            if key in pseudo:
                raise MalformedHeadersError(f"pseudo-header {name!r} repeated")
            pseudo[key] = text
            continue
        if not _NAME.match(name):
            raise MalformedHeadersError(f"field name {name!r} is not a lower-case token")
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            raise MalformedHeadersError(f"connection-specific field {name!r} is not allowed in HTTP/2")
        headers.append((name.decode("ascii"), text))
    return pseudo, headers


def _checked_local(headers: Iterable[tuple[str, str]]) -> HeaderList:
    # Our own fields are checked too: a bad one would make the peer reset the stream, far from the bug.
    out = list(headers)
    for name, value in out:
        raw = name.encode("ascii", "replace")
        if not _NAME.match(raw) or raw in _CONNECTION_SPECIFIC or (raw == b"te" and value != "trailers"):
            raise ValueError(f"cannot send header field {name!r} over HTTP/2")
        if not _VALUE.match(value.encode()):
            raise ValueError(f"header field {name!r} has a value HTTP/2 cannot carry: {value!r}")
    return out


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """A complete header block and what its HEADERS frame said about the stream."""

    stream_id: int
    end_stream: bool
    self_dependent: bool
    """The priority fields made the stream depend on itself: a stream error (RFC 9113 5.3.1)."""
    block: bytes | memoryview


class HeaderBlockAssembler:
    """Joins a HEADERS frame and its CONTINUATION frames into one block (RFC 9113 6.2 and 6.10).

    While a block is open no other frame may arrive; the connection checks that with `open`.
    """

    def __init__(self, max_header_list_size: int) -> None:
        # Huffman coding can stretch a list by up to ~4x; past that the peer is just flooding us.
        self._limit = 4 * max_header_list_size + 1024
        self._first: HeaderBlock | None = None
        self._fragments: list[bytes | memoryview] = []
        self._size = 0

    @property
    def open(self) -> bool:
        """Whether CONTINUATION frames are expected."""
        return self._first is not None

    def headers(self, flags: int, stream_id: int, payload: bytes | memoryview) -> HeaderBlock | None:
        """Take a HEADERS frame; the block when END_HEADERS completes it, else None."""
        if stream_id == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & fr.FLAG_PADDED:
            payload = fr.strip_padding(payload, "HEADERS")
        self_dependent = False
        if flags & fr.FLAG_PRIORITY:
            if len(payload) < 5:
                raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            self_dependent = fr.parse_u32(payload[:4], "HEADERS") & 0x7FFFFFFF == stream_id
            payload = payload[5:]
        block = HeaderBlock(stream_id, bool(flags & fr.FLAG_END_STREAM), self_dependent, payload)
        if flags & fr.FLAG_END_HEADERS:
            return block
        self._first, self._fragments, self._size = block, [payload], len(payload)
        return None

    def continuation(self, flags: int, stream_id: int, payload: bytes | memoryview) -> HeaderBlock | None:
        """Take a CONTINUATION frame; the whole block when END_HEADERS completes it, else None."""
        first = self._first
        if first is None or first.stream_id != stream_id:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"CONTINUATION on stream {stream_id} without HEADERS")
        self._fragments.append(payload)
        self._size += len(payload)
        if self._size > self._limit:
            raise ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, f"header block of over {self._size} bytes")
        if not flags & fr.FLAG_END_HEADERS:
            return None
        block = b"".join(self._fragments)
        self._first, self._fragments, self._size = None, [], 0
        return HeaderBlock(stream_id, first.end_stream, first.self_dependent, block)
