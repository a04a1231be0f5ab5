"""A mirrored request's head (`ztunnel.proxy.http_mirror.shadow_head`): the request as forwarded, its Host marked
`-shadow` before any port as Envoy marks it, the primary request untouched."""

from __future__ import annotations

import pytest

from ztunnel.l7.exchange import Exchange
from ztunnel.l7.messages import Head
from ztunnel.proxy.http_mirror import _shadow_host, shadow_head


@pytest.mark.parametrize(
    ("host", "shadow"),
    [
        ("echo", "echo-shadow"),
        ("echo:80", "echo-shadow:80"),
        ("echo.shop.svc.cluster.local:8080", "echo.shop.svc.cluster.local-shadow:8080"),
        ("10.96.0.10:80", "10.96.0.10-shadow:80"),
        ("[fd00::1]:80", "[fd00::1]-shadow:80"),
        ("[fd00::1]", "[fd00::1]-shadow"),
    ],
)
def test_the_shadow_host_is_marked_before_any_port(host: str, shadow: str) -> None:
    assert _shadow_host(host.encode()) == shadow.encode()


def test_the_copy_is_the_forwarded_request_with_its_host_shadowed() -> None:
    headers = [(b"Host", b"echo:80"), (b"X-Env", b"prod"), (b"Connection", b"keep-alive"), (b"X-Secret", b"s")]
    head = Head("1.1", headers, method="GET", target="/v2/a?x=1")
    exchange = Exchange(head, extra=[b"x-request-id: r1\r\n"], drop=frozenset({b"x-secret"}))
    assert shadow_head(exchange) == (
        b"GET /v2/a?x=1 HTTP/1.1\r\nHost: echo-shadow:80\r\nX-Env: prod\r\nx-request-id: r1\r\n\r\n"
    )
    assert head.headers == headers and head.get(b"host") == b"echo:80"  # the primary goes as it was
