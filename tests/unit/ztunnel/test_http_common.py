"""What the HTTP routers forward: the request target put in the form authorization decided on, as Istio does."""

from __future__ import annotations

import pytest

from ztunnel.l7.messages import Head
from ztunnel.proxy.http_common import normalize_target


@pytest.mark.parametrize(
    ("method", "target", "forwarded"),
    [
        ("GET", "/public/../admin?x=1#frag", "/admin?x=1"),  # an ALLOW on /public* never allowed /admin
        ("GET", "/a/%62/./c", "/a/b/c"),
        ("GET", "/a%2fb", "/a%2Fb"),  # an encoded slash stays encoded (BASE)
        ("GET", "/a\\b", "/a/b"),
        ("GET", "http://web/x/./y?q", "/x/y?q"),
        ("GET", "/plain?a=/../b", "/plain?a=/../b"),  # the query is not a path
        ("CONNECT", "web:443", "web:443"),
        ("OPTIONS", "*", "*"),
    ],
)
def test_the_target_is_forwarded_normalized(method: str, target: str, forwarded: str) -> None:
    head = Head("1.1", [], method=method, target=target)
    assert normalize_target(head)
    assert head.target == forwarded


@pytest.mark.parametrize("target", ["/a%zz", "/a%00b", "relative", "/\x7f"])
def test_a_target_that_cannot_be_normalized_is_refused(target: str) -> None:
    assert not normalize_target(Head("1.1", [], method="GET", target=target))
