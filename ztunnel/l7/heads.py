"""The heads the proxy writes: a request rebuilt for its upstream, a response rebuilt for its client.

Hop-by-hop headers end at each hop (`messages.end_to_end`); what a hop needs is added for it: the framing the
proxy chose (chunked, or none), `connection: upgrade` and `upgrade` for a real upgrade, `te: trailers` when the
client takes trailers (so the upstream may send them), `connection: close` or, to an HTTP/1.0 client kept
alive, `connection: keep-alive`.
"""

from __future__ import annotations

from ztunnel.l7.exchange import Exchange
from ztunnel.l7.messages import Head, end_to_end


def upgrade_tokens(head: Head) -> set[bytes]:
    return {token.strip().lower() for value in head.values(b"upgrade") for token in value.split(b",")}


def request_head(exchange: Exchange) -> bytes:
    head = exchange.head
    lines = [b"%b %b HTTP/1.1\r\n" % (head.method.encode("latin-1"), head.target.encode("latin-1"))]
    lines.extend(end_to_end(head, exchange.drop))
    lines.extend(exchange.extra)
    if head.upgrade and head.method != "CONNECT":
        lines.append(b"connection: upgrade\r\n")
        lines.extend(b"upgrade: " + v + b"\r\n" for v in head.values(b"upgrade"))
    if any(token.strip().lower() == b"trailers" for value in head.values(b"te") for token in value.split(b",")):
        # The client takes trailers, and so does this proxy (re-chunked to it): the upstream may send them.
        lines.append(b"te: trailers\r\nconnection: te\r\n")
    if head.chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def response_head(response: Head, request: Head, framing: str, keep: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %b\r\n" % (response.status, response.reason.encode("latin-1"))]
    lines.extend(end_to_end(response))
    if framing == "upgrade":
        if response.status == 101:
            lines.append(b"connection: upgrade\r\n")
            lines.extend(b"upgrade: " + v + b"\r\n" for v in response.values(b"upgrade"))
    elif framing == "chunked":
        lines.append(b"transfer-encoding: chunked\r\n")
    if response.status >= 200 and framing != "upgrade":
        if not keep:
            lines.append(b"connection: close\r\n")
        elif request.version == "1.0":
            lines.append(b"connection: keep-alive\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def origin_form(head: Head) -> None:
    """Turn an absolute-form request target (`GET http://web.shop/a?b`, as sent to a proxy) into origin form
    (`/a?b`) with the authority as Host (RFC 9112 3.2.2: the target's authority wins over a Host header), as
    Envoy forwards it, so that routes match its path and the app gets what it would get without a proxy."""
    target = head.target
    if target[:1] == "/" or head.method == "CONNECT":
        return
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    head.target = path if path.startswith("/") else "/" + path
    if authority:
        kept = [(n, v) for n, v in head.headers if n.lower() != b"host"]
        head.replace_headers([*kept, (b"host", authority.encode("latin-1"))])
