"""Request bodies of the sample app, read in pieces whatever their framing (no body is ever held whole)."""

from __future__ import annotations

from collections.abc import Iterator
from io import BufferedIOBase

CHUNK = 64 * 1024


class BodyError(ValueError):
    """A request body that does not follow its framing."""


def read_chunked(rfile: BufferedIOBase, max_line: int = 4096) -> Iterator[bytes]:
    """A chunked body (RFC 9112 section 7.1) in pieces of at most CHUNK bytes; trailers are read and dropped."""
    while True:
        line = rfile.readline(max_line + 1)
        size_text = line.split(b";", 1)[0].strip()
        if len(line) > max_line or not line.endswith(b"\n") or not size_text:
            raise BodyError("malformed chunk size line")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BodyError(f"chunk size {size_text[:20]!r} is not hexadecimal") from None
        if size == 0:
            break
        while size > 0:
            chunk = rfile.read(min(size, CHUNK))
            if not chunk:
                raise BodyError("body ended inside a chunk")
            size -= len(chunk)
            yield chunk
        if rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BodyError("chunk data longer than its size")
    while True:  # the trailer section, up to its empty line
        line = rfile.readline(max_line + 1)
        if not line.endswith(b"\n"):
            raise BodyError("body ended inside the trailers")
        if not line.strip():
            return
