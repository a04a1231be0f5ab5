"""The sample app's WebSocket echo (RFC 6455), written small and blocking: one thread per connection.

`accept_key` answers the opening handshake; `echo` then serves frames until the client closes: text, binary and
continuation frames come back unmasked with the same opcode and FIN bit (a fragmented message is echoed
fragmented), a ping gets a pong with its payload, and a close is answered with the same status code before the
connection ends. A protocol error (an unmasked client frame, a control frame over 125 bytes or fragmented, an
unknown opcode, a frame over `MAX_PAYLOAD`) ends the connection with close code 1002 or 1009, as RFC 6455 asks.
Stdlib only, like the app itself.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from io import BufferedIOBase

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
MAX_PAYLOAD = 16 << 20

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = {CONTINUATION, TEXT, BINARY}
_CONTROL = {CLOSE, PING, PONG}

PROTOCOL_ERROR, TOO_BIG = 1002, 1009


class _Fail(Exception):
    """The client broke the protocol: close with `code`."""

    def __init__(self, code: int) -> None:
        self.code = code


def accept_key(key: str) -> str:
    """The `Sec-WebSocket-Accept` value answering a client's `Sec-WebSocket-Key`."""
    return base64.b64encode(hashlib.sha1(key.strip().encode() + GUID).digest()).decode()  # noqa: S324 (RFC's hash)


def valid_key(key: str) -> bool:
    """A `Sec-WebSocket-Key` is 16 random bytes in base64."""
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except ValueError:
        return False


def _read_exact(rfile: BufferedIOBase, n: int) -> bytes:
    data = rfile.read(n)
    if len(data) != n:
        raise EOFError("connection closed inside a frame")
    return data


def _unmask(payload: bytes, mask: bytes) -> bytes:
    # XOR as one big integer: no per-byte Python loop on large frames.
    n = len(payload)
    if n == 0:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def read_frame(rfile: BufferedIOBase) -> tuple[bool, int, bytes]:
    """(FIN, opcode, unmasked payload) of the next client frame; raises `_Fail` on a protocol error."""
    b0, b1 = _read_exact(rfile, 2)
    fin, opcode, masked, length = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
    if b0 & 0x70 or opcode not in _DATA | _CONTROL or not masked:  # no extensions; clients must mask
        raise _Fail(PROTOCOL_ERROR)
    if opcode in _CONTROL and (length > 125 or not fin):
        raise _Fail(PROTOCOL_ERROR)
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(rfile, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(rfile, 8))
    if length > MAX_PAYLOAD:
        raise _Fail(TOO_BIG)
    mask = _read_exact(rfile, 4)
    return fin, opcode, _unmask(_read_exact(rfile, length), mask)


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One server frame (servers never mask)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def echo(rfile: BufferedIOBase, wfile: BufferedIOBase) -> None:
    """Serve one WebSocket connection after the 101 until the client closes or breaks the protocol."""
    while True:
        try:
            fin, opcode, payload = read_frame(rfile)
        except _Fail as exc:
            wfile.write(frame(CLOSE, struct.pack("!H", exc.code)))
            wfile.flush()
            return
        except EOFError:
            return
        if opcode == CLOSE:
            # Echo the status code (not the reason), or an empty close when the client sent none.
            wfile.write(frame(CLOSE, payload[:2]))
            wfile.flush()
            return
        if opcode == PING:
            wfile.write(frame(PONG, payload))
        elif opcode in _DATA:
            wfile.write(frame(opcode, payload, fin))
        wfile.flush()  # a pong from the client needs no answer
