"""Which Service ports are HTTP, as Istio's explicit protocol selection decides from `appProtocol` and the name."""

from __future__ import annotations

import pytest

from meshlet_contracts.config_items import ServicePortItem
from meshlet_contracts.protocols import http_ports, http_reason, is_http2

CASES = [
    # (port name, appProtocol, reason, HTTP/2)
    ("http", None, "port name http", False),
    ("http-web", None, "port name http-web", False),
    ("HTTP-Web", None, "port name HTTP-Web", False),
    ("http2", None, "port name http2", True),
    ("http2-api", None, "port name http2-api", True),
    ("grpc", None, "port name grpc", True),
    ("grpc-internal", None, "port name grpc-internal", True),
    ("grpc-web", None, "port name grpc-web", True),
    ("grpc-web-ui", None, "port name grpc-web-ui", True),
    ("", "http", "appProtocol: http", False),
    ("", "HTTP", "appProtocol: HTTP", False),
    ("db", "http2", "appProtocol: http2", True),
    ("x", "grpc", "appProtocol: grpc", True),
    ("x", "kubernetes.io/h2c", "appProtocol: kubernetes.io/h2c", True),
    ("x", "kubernetes.io/ws", "appProtocol: kubernetes.io/ws", False),
    ("tcp-x", "http", "appProtocol: http", False),  # appProtocol wins over the name
    ("http", "", "port name http", False),  # "" is unset
]

NOT_HTTP = [
    ("", None),
    ("web", None),
    ("https", None),
    ("https-web", None),
    ("httpx", None),
    ("tcp", None),
    ("tls", None),
    ("mysql", None),
    ("mongo", None),
    ("redis", None),
    ("http-web", "tcp"),  # a set appProtocol decides alone
    ("http", "https"),
    ("http", "tls"),
    ("http", "mysql"),
    ("http", "kubernetes.io/wss"),
    ("http", "example.com/custom"),
]


@pytest.mark.parametrize(("name", "app_protocol", "reason", "h2"), CASES)
def test_http_ports_and_why(name: str, app_protocol: str | None, reason: str, h2: bool) -> None:
    assert http_reason(name, app_protocol) == reason
    assert is_http2(name, app_protocol) is h2


@pytest.mark.parametrize(("name", "app_protocol"), NOT_HTTP)
def test_other_ports_are_not_http(name: str, app_protocol: str | None) -> None:
    assert http_reason(name, app_protocol) is None
    assert is_http2(name, app_protocol) is False


def test_http_ports_of_a_service_item_only_counts_tcp_ports() -> None:
    ports: list[ServicePortItem] = [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "metrics", "port": 9090},
        {"name": "dns", "port": 53, "appProtocol": "http", "protocol": "UDP"},
        {"port": 81, "appProtocol": "kubernetes.io/h2c"},
        {"name": "http-alt", "port": 8080, "appProtocol": "tcp"},
    ]
    assert http_ports(ports) == {80: "port name http", 81: "appProtocol: kubernetes.io/h2c"}
