"""Request path normalization (Istio's BASE) and path matching (string forms and path templates), by table."""

from __future__ import annotations

import pytest

from meshlet_contracts.policy import Operation, PolicyError
from ztunnel.l7.paths import normalize, path_matches, valid_template


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a/b", "/a/b"),
        # BASE resolves dot segments as RFC 3986 says.
        ("/a/../b", "/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        # Encoded dots are decoded first (unreserved characters), so they are dot segments too.
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E./b", "/b"),
        ("/%2e/x", "/x"),
        # Unreserved characters are decoded, once only: %25 (%) is reserved, so %252e stays as it is.
        ("/%41%62%7e%5f%2d%30", "/Ab~_-0"),
        ("/%252e%252e/x", "/%252e%252e/x"),
        # BASE keeps slashes unmerged.
        ("//a//b", "//a//b"),
        ("/a//../b", "/a/b"),
        # Only DECODE_AND_MERGE_SLASHES decodes %2F and %5C; BASE keeps them encoded (hex upper-cased).
        ("/a%2fb", "/a%2Fb"),
        ("/a%2F..%2Fb", "/a%2F..%2Fb"),
        ("/a%5cb", "/a%5Cb"),
        ("/a%3fb", "/a%3Fb"),
        # BASE reads a backslash as a slash.
        ("/a\\b", "/a/b"),
        ("/a\\..\\b", "/b"),
        # The query and the fragment are not part of the path.
        ("/a?x=1", "/a"),
        ("/a?next=/../admin", "/a"),
        ("/a/..?x", "/"),
        ("/a#frag", "/a"),
        # Absolute-form: its path counts (a proxy may be sent one).
        ("http://example.com/p/../q?x", "/q"),
        ("http://example.com", "/"),
        ("http://example.com?x", "/"),
        # Cannot be normalized safely: the caller fails closed.
        ("/%zz", None),
        ("/a%2", None),
        ("/a%", None),
        ("/%00", None),
        ("/a b", None),
        ("/caf\u00e9", None),
        ("/a\tb", None),
        ("*", None),
        ("example.com:443", None),
        ("", None),
        ("a/b", None),
    ],
)
def test_normalize_follows_istio_base(target: str, expected: str | None) -> None:
    assert normalize(target) == expected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/info", "/info", True),
        ("/info", "/info/", False),
        ("/info", "/Info", False),  # case-sensitive
        ("/info*", "/info", True),
        ("/info*", "/information/x", True),
        ("/info*", "/inf", False),
        ("*/info", "/a/b/info", True),
        ("*/info", "/info", True),
        ("*/info", "/info/x", False),
        ("*", "/", True),
        ("*", "/anything/at/all", True),
        # {*}: exactly one non-empty segment.
        ("/foo/{*}", "/foo/bar", True),
        ("/foo/{*}", "/foo/bar/baz", False),
        ("/foo/{*}", "/foo/", False),
        ("/foo/{*}", "/foo", False),
        ("/foo/{*}/bar", "/foo/x/bar", True),
        ("/foo/{*}/bar", "/foo/x/y/bar", False),
        ("/{*}/{*}", "/a/b", True),
        # {**}: zero or more characters, slashes included; the slash before it is literal.
        ("/foo/{**}", "/foo/bar", True),
        ("/foo/{**}", "/foo/bar/baz/qux", True),
        ("/foo/{**}", "/foo/", True),
        ("/foo/{**}", "/foo", False),
        ("/foo/{**}", "/foobar", False),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/", True),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz", True),
        ("/foo/{*}/bar/{**}", "/foo/buzz/qux/bar/baz", False),
        ("/foo/{**}/", "/foo/bar/", True),
        ("/foo/{**}/", "/foo//", True),
        ("/foo/{**}/", "/foo/bar", False),
        ("/a.b/{*}", "/aXb/c", False),  # literals are literal, not regular expressions
        ("/Foo/{*}", "/foo/x", False),
    ],
)
def test_path_matches_string_forms_and_templates(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("/foo/{*}", None),
        ("/foo/{**}", None),
        ("/foo/{*}/bar/{**}", None),
        ("/foo/{**}/", None),
        ("/{*}", None),
        # Examples of invalid templates from Istio's reference for Operation.paths.
        ("/*/baz/{*}", "may not appear elsewhere"),
        ("/**/baz/{*}", "may not appear elsewhere"),
        ("/{**}/foo/{*}", "{**} must be the last operator"),
        ("/foo/{*}.txt", "must be a whole segment"),
        ("/{**}/{**}", "{**} must be the last operator"),
        ("/foo/{name}/{*}", "may not appear elsewhere"),
        ("foo/{*}", "must start with '/'"),
        ("/a//{*}", "empty segment"),
        ("/a b/{*}", "printable ASCII"),
    ],
)
def test_valid_template_explains_what_is_wrong(pattern: str, error: str | None) -> None:
    result = valid_template(pattern)
    if error is None:
        assert result is None
    else:
        assert result is not None and error in result


def test_an_invalid_template_on_the_wire_is_refused_naming_its_field() -> None:
    fields: dict[str, list[str]] = {
        "hosts": [],
        "notHosts": [],
        "ports": [],
        "notPorts": [],
        "methods": [],
        "notMethods": [],
    }
    with pytest.raises(PolicyError, match=r"notPaths\[1\]: '/\{\*\*\}/x/\{\*\}': \{\*\*\} must be the last"):
        Operation.from_wire({**fields, "paths": [], "notPaths": ["/ok/{*}", "/{**}/x/{*}"]})
    assert Operation.from_wire({**fields, "paths": ["/a/{*}", "/b*"], "notPaths": []}).paths == ("/a/{*}", "/b*")
