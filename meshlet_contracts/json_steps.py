"""JSON parsed in steps: `json.loads` that gives other threads their turns on a multi-megabyte text.

`json.loads` is one C call: a thread parsing a 10,000-workload snapshot (5 MB) holds the GIL for all of it,
50-70 ms, and an event loop in another thread (ztunnel's, carrying every request of the node) waits that long
(measured with the bench's push probe: loop ticks 40-70 ms late while a worker thread decoded). Here the
outer containers, down to `depth` levels, are walked in Python and each of their elements is parsed by its own
C call (`JSONDecoder.raw_decode`), so the interpreter can hand the GIL over between elements. The result is
what `json.loads` returns for the same text, errors included (a `json.JSONDecodeError` naming the place).
"""

from __future__ import annotations

import json
from typing import Any

_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def loads_in_steps(text: str, depth: int = 3) -> Any:
    """`json.loads(text)`, with the containers of the first `depth` levels parsed one element at a time."""
    value, end = _value(text, _skip(text, 0), depth)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _skip(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _SPACE:
        i += 1
    return i


def _expect(text: str, i: int, what: str) -> None:
    if i >= len(text) or text[i] != what:
        raise json.JSONDecodeError(f"Expecting '{what}' delimiter", text, i)


def _value(text: str, i: int, depth: int) -> tuple[Any, int]:
    if depth > 0 and i < len(text):
        if text[i] == "{":
            return _object(text, i + 1, depth - 1)
        if text[i] == "[":
            return _array(text, i + 1, depth - 1)
    return _DECODER.raw_decode(text, i)


def _object(text: str, i: int, depth: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    i = _skip(text, i)
    if i < len(text) and text[i] == "}":
        return out, i + 1
    while True:
        if i >= len(text) or text[i] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        key, i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        _expect(text, i, ":")
        out[key], i = _value(text, _skip(text, i + 1), depth)
        i = _skip(text, i)
        if i < len(text) and text[i] == "}":
            return out, i + 1
        _expect(text, i, ",")
        i = _skip(text, i + 1)


def _array(text: str, i: int, depth: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    i = _skip(text, i)
    if i < len(text) and text[i] == "]":
        return out, i + 1
    while True:
        item, i = _value(text, i, depth)
        out.append(item)
        i = _skip(text, i)
        if i < len(text) and text[i] == "]":
            return out, i + 1
        _expect(text, i, ",")
        i = _skip(text, i + 1)
