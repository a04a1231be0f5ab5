"""The interface every source fits: it reports batches of raw, Kubernetes-shaped objects per origin.

An origin is where objects come from and what errors are attached to: a file for the file source, an
object for the kubernetes source. Each batch replaces what the source said before about its origin:
its errors, and the objects it lists (upserts) or withdraws (deletes). A source never decides whether an
object is valid beyond "is this an object at all": the store converts and keeps the last good version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from control.model.fields import ObjectKey


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """What one origin holds now."""

    origin: str
    upserts: tuple[dict[str, Any], ...] = ()
    deletes: tuple[ObjectKey, ...] = ()
    errors: tuple[str, ...] = ()
    """Problems with the origin as a whole (unparsable YAML, say): its objects keep their last good state."""


Sink = Callable[[Sequence[SourceBatch]], None]


class Source(Protocol):
    """Runs forever, calling `sink` with batches; the first call carries the complete initial state."""

    name: str

    async def run(self, sink: Sink) -> None: ...
