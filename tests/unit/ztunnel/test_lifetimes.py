"""What a finished connection leaves behind: nothing, freed by reference counting alone (issue #12, item 5).

ztunnel makes thousands of short connections a second; one that only the cyclic garbage collector can
free (a reference cycle) waits for a collection that, on a busy proxy, comes late, and takes its buffers,
TLS and HPACK state with it. So these run with the collector off: what is still referenced after the last
reference the test holds is dropped is what the proxy would have kept.
"""

from __future__ import annotations

import weakref

import pytest

from ztunnel.hbone import H2Connection
from ztunnel.metrics import Metrics
from ztunnel.proxy.relay import TcpSide, Tunnel


class FakeTransport:
    """Takes what a `TcpSide` does to its socket; the test reports the socket's events itself."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = self.aborted = self.eof = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> None:
        return None


pytestmark = pytest.mark.usefixtures("no_cyclic_gc")


def side(tunnel: Tunnel) -> tuple[TcpSide, FakeTransport]:
    s, transport = TcpSide(tunnel), FakeTransport()
    s.connection_made(transport)  # type: ignore[arg-type]
    return s, transport


def test_an_http2_connection_is_freed_when_dropped() -> None:
    for client in (True, False):
        h2 = H2Connection(client)
        freed = weakref.ref(h2)
        del h2
        assert freed() is None, f"an H2Connection(client={client}) is kept alive by a reference cycle"


def test_a_finished_tunnel_and_its_sides_are_freed_when_dropped() -> None:
    registry: set[Tunnel] = set()
    tunnel = Tunnel("inbound", Metrics(), registry, "10.0.0.1 -> 10.0.0.2:80")
    down, down_socket = side(tunnel)
    tunnel.downstream = down
    up, up_socket = side(tunnel)
    tunnel.established(up)
    down.data_received(b"request")
    up.data_received(b"response")
    down.eof_received()
    up.eof_received()
    down.connection_lost(None)
    up.connection_lost(None)
    assert (up_socket.written, down_socket.written) == (b"request", b"response")
    assert not registry and not up_socket.aborted and not down_socket.aborted  # a clean end, both ways

    refs = {name: weakref.ref(obj) for name, obj in (("tunnel", tunnel), ("downstream", down), ("upstream", up))}
    del tunnel, down, up
    kept = [name for name, ref in refs.items() if ref() is not None]
    assert not kept, f"a finished tunnel's {', '.join(kept)} stay referenced (a reference cycle)"


def test_an_upstream_connected_after_the_client_left_is_reset_and_freed() -> None:
    metrics, registry = Metrics(), set[Tunnel]()
    tunnel = Tunnel("outbound", metrics, registry, "10.0.0.1 -> 10.0.0.2:80")
    down, _ = side(tunnel)
    tunnel.downstream = down
    down.connection_lost(ConnectionResetError())  # the client gave up while the upstream was connecting
    up, up_socket = side(tunnel)
    tunnel.established(up)
    assert up_socket.aborted, "the upstream of a tunnel whose client is gone must be reset"
    up.connection_lost(None)
    assert not registry

    refs = [weakref.ref(obj) for obj in (tunnel, down, up)]
    del tunnel, down, up
    assert all(ref() is None for ref in refs)
