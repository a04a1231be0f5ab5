"""Request paths as AuthorizationPolicy compares them: Istio's default normalization ("BASE") and path matching.

Istio normalizes the path once and evaluates `paths` / `notPaths` against the result (Istio's reference page
"Authorization Policy Normalization"). `normalize` does what that page lists for the default option BASE:
- the query (`?...`) and any fragment (`#...`) are not part of the path;
- percent-encoded unreserved characters (letters, digits, `-`, `.`, `_`, `~`) are decoded, once (`%2541` stays
  `%2541`); every other escape is kept, with its hex digits in upper case (RFC 3986 6.2.2.1), so `%2f` stays an
  encoded slash (`%2F`) and `%5c` an encoded backslash: decoding those belongs to DECODE_AND_MERGE_SLASHES;
- a backslash is read as a slash (`/a\\b` is `/a/b`);
- dot segments `.` and `..` are resolved as RFC 3986 5.2.4 says, after the decoding (so `%2e%2e` is `..`);
- repeated slashes are kept (merging them is MERGE_SLASHES, not BASE).
A path that cannot be normalized safely gives None, and the caller fails closed (no ALLOW rule with paths
matches, every DENY rule's paths do): `%00` (Istio rejects the request), an escape that is not `%` and two hex
digits, a character that is not printable ASCII (a raw space, a control character, a non-ASCII one), and a
target that is neither origin-form (`/p`) nor absolute-form (`http://h/p`, whose path is used), such as `*`.
"""

from __future__ import annotations

import re
import string

from meshlet_contracts.http_paths import is_template, template_matches, valid_template
from ztunnel.rbac import string_matches

__all__ = ["normalize", "path_matches", "valid_template"]

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HEX = frozenset(string.hexdigits)
_PRINTABLE = re.compile(r"[!-~]*")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
_END_OF_PATH = re.compile(r"[?#]")


def normalize(target: str) -> str | None:
    """The path of the request target `target` as policies compare it (see the module docstring), or None
    when it cannot be normalized safely."""
    if not _PRINTABLE.fullmatch(target):
        return None
    path = _END_OF_PATH.split(target, maxsplit=1)[0]
    if not path.startswith("/"):
        absolute = _ABSOLUTE.match(path)
        if absolute is None:
            return None  # `*`, authority-form (`host:443`) or garbage: no path to compare
        path = path[absolute.end() :] or "/"
    decoded = _decode_unreserved(path)
    if decoded is None:
        return None
    return _remove_dot_segments(decoded.replace("\\", "/"))


def path_matches(pattern: str, path: str) -> bool:
    """Whether the normalized `path` matches one `paths` entry: a path template when `pattern` holds `{*}` or
    `{**}` (see `meshlet_contracts.http_paths`), else Istio's string match (exact, `prefix*`, `*suffix`, `*`
    for any non-empty path). Case-sensitive, as in Istio. Raises ValueError for an invalid template, which
    policies never hold: they are validated when read."""
    if is_template(pattern):
        return template_matches(pattern, path)
    return string_matches(pattern, path)


def _decode_unreserved(path: str) -> str | None:
    if "%" not in path:
        return path
    out: list[str] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char != "%":
            out.append(char)
            i += 1
            continue
        digits = path[i + 1 : i + 3]
        if len(digits) != 2 or not set(digits) <= _HEX:
            return None
        decoded = chr(int(digits, 16))
        if decoded == "\0":
            return None
        out.append(decoded if decoded in _UNRESERVED else "%" + digits.upper())
        i += 3
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on an absolute path: `.` vanishes, `..` also takes the segment before it (never the root);
    a dot segment at the end leaves a trailing slash (`/a/b/..` is `/a/`)."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(segment)
    return "/" + "/".join(out)
