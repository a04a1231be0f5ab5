"""Istio's path templates for AuthorizationPolicy `paths` / `notPaths`: one grammar for control and ztunnel.

Control rejects an invalid template when it reads a policy and ztunnel matches requests with it, so both must
parse a template the same way; that is why the grammar lives here, in the contracts, rather than in either.

A path is a template when it contains `{*}` or `{**}` (Istio's API reference, Operation.paths); any other path
is an ordinary Istio string match (exact, `prefix*`, `*suffix`, `*`), which ztunnel does itself. The rules
follow that reference and the Envoy URI template Istio hands templates to:
- a template starts with `/` and is split at `/` into segments; a segment is either exactly `{*}`, exactly
  `{**}`, or a literal with no `*`, `{` or `}` (`/foo/{*}.txt` and `/*/baz/{*}` are invalid);
- literal segments are not empty, except one trailing empty segment: `/foo/{*}/` ends in a slash;
- `{**}` may appear once, and no operator may follow it (it must be the last operator);
- `{*}` matches one segment of one or more characters (never a `/`);
- `{**}` matches zero or more characters, `/` included, so `/foo/{**}` matches `/foo/` and `/foo/a/b` but not
  `/foo` (the slash before it is literal).
Envoy further limits what `{*}` and `{**}` match to RFC 3986 path characters (no `=` or `*`, for instance);
after normalization a path holds little else, and here they match any character but `/` (resp. any), which
is what the Istio reference describes and what a policy author expects from a DENY on `/admin/{*}`.
"""

from __future__ import annotations

import re
from functools import lru_cache

_ONE = "{*}"
_MANY = "{**}"
# Envoy accepts only printable ASCII without spaces in a template; so does this.
_PRINTABLE = re.compile(r"[!-~]+")


def is_template(pattern: str) -> bool:
    """Whether `pattern` is matched as a path template rather than as an Istio string match."""
    return _ONE in pattern or _MANY in pattern


def valid_template(pattern: str) -> str | None:
    """Why `pattern` (a path containing `{*}` or `{**}`) is not a valid path template, or None if it is."""
    if not pattern.startswith("/"):
        return "a path template must start with '/'"
    if not _PRINTABLE.fullmatch(pattern):
        return "a path template may hold only printable ASCII characters, no spaces"
    segments = pattern[1:].split("/")
    seen_many = False
    for i, segment in enumerate(segments):
        if segment in (_ONE, _MANY):
            if seen_many:
                return "{**} must be the last operator of a path template"
            seen_many = segment == _MANY
        elif "*" in segment or "{" in segment or "}" in segment:
            return (
                f"segment {segment!r}: an operator ({{*}} or {{**}}) must be a whole segment, and '*', '{{' "
                "and '}' may not appear elsewhere in a path template"
            )
        elif not segment and i != len(segments) - 1:
            return "a path template may not hold an empty segment ('//') except a single trailing '/'"
    return None


@lru_cache(maxsize=1024)
def compile_template(pattern: str) -> re.Pattern[str]:
    """The regular expression a path must fully match to match the template `pattern`. Cached: policies hold
    few distinct templates and every request of an L7 port matches them.

    Raises ValueError (with `valid_template`'s reason) when `pattern` is not a valid template."""
    error = valid_template(pattern)
    if error is not None:
        raise ValueError(f"{pattern!r}: {error}")
    parts = []
    for segment in pattern[1:].split("/"):
        if segment == _ONE:
            parts.append("[^/]+")
        elif segment == _MANY:
            parts.append(".*")
        else:
            parts.append(re.escape(segment))
    return re.compile("/" + "/".join(parts), re.DOTALL)


def template_matches(pattern: str, path: str) -> bool:
    """Whether the normalized `path` (no query) matches the valid template `pattern`; case-sensitive."""
    return compile_template(pattern).fullmatch(path) is not None
