"""Which Service ports speak HTTP, by Istio's explicit protocol selection: the shared rule control, ztunnel and the
CLI apply to a port's `appProtocol` and name.

Istio reads a port's protocol from `appProtocol` when it is set, and from the port name otherwise; the name is
`<protocol>` or `<protocol>-<suffix>`, compared without case. An `appProtocol` that is set decides alone, even when
it names no HTTP protocol: `appProtocol: tcp` on a port named `http-web` is TCP. `grpc-web` is matched whole before
the prefix split, as Istio does, since it contains the separator itself.

HTTP here means plaintext HTTP the proxy can parse: `http`, `http2`, `grpc`, `grpc-web`, and Kubernetes' standard
`kubernetes.io/h2c` (HTTP/2 without TLS) and `kubernetes.io/ws` (WebSocket, which starts as an HTTP/1.1 request).
`https`, `tls` and `kubernetes.io/wss` are TLS the proxy cannot see into; `tcp`, `mongo`, `mysql`, `redis` and
anything unknown stay opaque TCP.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshlet_contracts.config_items import ServicePortItem

# Protocol tokens (lowercase) after the prefix split, and whether each is HTTP/2 on the wire.
_HTTP_TOKENS: dict[str, bool] = {"http": False, "http2": True, "grpc": True, "grpc-web": True}
# Whole `appProtocol` values Kubernetes defines (KEP-3726), matched before any prefix split.
_KUBERNETES_APP_PROTOCOLS: dict[str, bool | None] = {
    "kubernetes.io/h2c": True,
    "kubernetes.io/ws": False,
    "kubernetes.io/wss": None,  # TLS: opaque to the proxy
}


def _token(value: str) -> str:
    """The protocol a port name or `appProtocol` declares: `grpc-web` whole, else the part before the first `-`."""
    lowered = value.lower()
    if lowered.startswith("grpc-web"):
        return "grpc-web"
    return lowered.partition("-")[0]


def _classify(value: str) -> bool | None:
    """None when `value` declares no HTTP protocol; else whether that HTTP is HTTP/2."""
    lowered = value.lower()
    if lowered in _KUBERNETES_APP_PROTOCOLS:
        return _KUBERNETES_APP_PROTOCOLS[lowered]
    return _HTTP_TOKENS.get(_token(value))


def _declared(port_name: str, app_protocol: str | None) -> tuple[str, str, bool] | None:
    """(which field, its value, is HTTP/2) of the field that says the port is HTTP, or None."""
    if app_protocol:
        # A set appProtocol decides alone: `tcp` there overrides an `http-` name.
        h2 = _classify(app_protocol)
        return None if h2 is None else ("appProtocol:", app_protocol, h2)
    h2 = _classify(port_name) if port_name else None
    return None if h2 is None else ("port name", port_name, h2)


def http_reason(port_name: str, app_protocol: str | None) -> str | None:
    """Why a Service port is HTTP (`appProtocol: http`, `port name http-web`), or None when it is not.

    `port_name` may be "" (an unnamed port); `app_protocol` None or "" means not set.
    """
    found = _declared(port_name, app_protocol)
    return None if found is None else f"{found[0]} {found[1]}"


def is_http2(port_name: str, app_protocol: str | None) -> bool:
    """Whether the port declares HTTP/2 with prior knowledge (`http2*`, `grpc*`, `kubernetes.io/h2c`).

    Informational: a proxy still tells HTTP/1 from HTTP/2 by the connection preface.
    """
    found = _declared(port_name, app_protocol)
    return found is not None and found[2]


def http_ports(ports: Iterable[ServicePortItem]) -> dict[int, str]:
    """Service port -> why it is HTTP, for the HTTP ports of a service item; only TCP ports are proxied at all,
    so a UDP port named `http` is not one."""
    out: dict[int, str] = {}
    for p in ports:
        if p.get("protocol") in (None, "", "TCP"):
            reason = http_reason(p.get("name", ""), p.get("appProtocol"))
            if reason is not None:
                out[p["port"]] = reason
    return out
