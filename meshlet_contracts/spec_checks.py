"""Checks shared by the parsers of meshlet's own spec objects (TrafficPolicy): durations as Istio and the Gateway
API write them, strict field sets with a hint for a misspelt field, bounded counts. Errors are `ItemError`s naming
the field; the caller's `within` prefixes where the object sits.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any

from meshlet_contracts.config_items import ItemError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_NS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1}


def parse_duration(text: object, field: str) -> float:
    """A duration as Istio (Go) writes it, in seconds; whole milliseconds, more than zero."""
    if not isinstance(text, str) or not text:
        raise ItemError(field, f"{text!r} is not a duration (write it as 10s, 1m or 500ms)")
    total_ns = 0.0
    pos = 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total_ns += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ItemError(field, f"{text!r} is not a duration (write it as 10s, 1m or 500ms)")
    ms = total_ns / 10**6
    if ms != int(ms) or ms < 1:
        raise ItemError(field, f"{text!r}: durations are whole milliseconds, at least 1ms")
    return int(ms) / 1000


def format_duration(seconds: float) -> str:
    """The canonical text of a duration: `30s`, `500ms`, `1m`, `1h`; `parse_duration` reads it back exactly."""
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def known(raw: Mapping[str, Any], fields: Collection[str]) -> None:
    """Reject a field outside `fields`, suggesting the closest one (`maxEjectionPercnt`: maxEjectionPercent)."""
    for key in raw:
        if key not in fields:
            lowered = {f.lower(): f for f in fields}
            close = difflib.get_close_matches(str(key).lower(), lowered, n=1)
            hint = f"did you mean {lowered[close[0]]!r}?" if close else f"known fields: {', '.join(sorted(fields))}"
            raise ItemError(str(key), f"unknown field; {hint}")


def count(raw: Mapping[str, Any], key: str, minimum: int = 1, maximum: int | None = None) -> int | None:
    """An integer within bounds, or None when absent."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ItemError(key, f"expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"within {minimum}..{maximum}"
        raise ItemError(key, f"{value} is out of range: expected {bounds}")
    return value


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))
