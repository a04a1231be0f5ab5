"""Regular expressions of routes (HTTPRoute `RegularExpression` path, header and query matches), with RE2.

RE2 is what Envoy and other Gateway API implementations match with: linear in the input, whatever the pattern,
so a route's author (any namespace user) cannot stall the node proxy with a pattern that backtracks without end
(`(a+)+$` against a long path takes Python's `re` longer than any timeout). RE2 leaves out what needs
backtracking (backreferences, lookaround); control refuses those with RE2's reason, so the proxy only ever
compiles patterns that compiled before. One compile function for both, so they can never disagree.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import re2


class Pattern(Protocol):
    def fullmatch(self, text: str) -> Any: ...


class RegexError(ValueError):
    """Not a pattern RE2 takes; the message is RE2's reason."""


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a user's bad pattern is reported by control, not logged to stderr by RE2


@functools.lru_cache(maxsize=1024)
def compile_re2(pattern: str) -> Pattern:
    """The compiled pattern (cached: routes are matched per request, compiled once); RegexError when RE2 refuses
    it (a backreference, a lookaround, a syntax error)."""
    try:
        compiled: Pattern = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        raise RegexError(reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)) from None
    return compiled
