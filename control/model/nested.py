"""Parsing nested parts of a Kubernetes-shaped object: where a field sits, unknown fields, lists of objects.

Shared by the models of policy-like kinds (AuthorizationPolicy, PeerAuthentication, HTTPRoute): a nested
parser names fields relative to its own object and `within` adds where that object sits, so an error reads
`spec.rules[0].from[1].source.principals[0]: ...` however deep it was found.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from control.model.fields import ValidationError, fail, opt_list

T = TypeVar("T")


@contextmanager
def within(prefix: str) -> Iterator[None]:
    """Prefix the field of a ValidationError raised inside: nested parsers name fields relative to their
    own object, so the `fields` helpers work on them, and the caller adds where that object sits."""
    try:
        yield
    except ValidationError as exc:
        raise ValidationError(exc.reason, f"{prefix}.{exc.field}" if exc.field else prefix) from None


def check_fields(raw: Mapping[str, Any], known: Collection[str]) -> None:
    """Reject fields not in `known`, as Kubernetes' strict decoding does, suggesting the closest known one."""
    for name in raw:
        if name not in known:
            # Compare case-insensitively: `mTLS` for `mtls` and `labels` for `matchLabels` are the usual slips.
            lowered = {k.lower(): k for k in known}
            close = difflib.get_close_matches(str(name).lower(), lowered, n=1)
            hint = f"did you mean {lowered[close[0]]!r}?" if close else f"known fields: {', '.join(sorted(known))}"
            fail(str(name), f"unknown field {name!r}; {hint}")


def mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(field, f"expected a mapping, got {'null' if value is None else type(value).__name__}")
    return value


def each(raw: Mapping[str, Any], name: str, parse: Callable[[Mapping[str, Any]], T]) -> tuple[T, ...]:
    """Parse every entry of the list of objects `raw[name]` (absent: none)."""
    out: list[T] = []
    for i, item in enumerate(opt_list(raw, name)):
        path = f"{name}[{i}]"
        entry = mapping(item, path)
        with within(path):
            out.append(parse(entry))
    return tuple(out)
