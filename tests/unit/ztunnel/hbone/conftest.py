"""A client and a server `H2Connection` wired back to back in memory, as the tests' only transport."""

from __future__ import annotations

from collections.abc import Iterable

from ztunnel.hbone import DataReceived, Event, H2Connection, H2Settings, RequestReceived, ResponseReceived


class Pair:
    """Both ends of one HBONE connection; `pump()` moves bytes until both sides are quiet.

    Events accumulate in `client_events` / `server_events`; `take_*` hands them over and clears them.
    Nothing acknowledges received data unless a test does, so flow control is under the test's control.
    """

    def __init__(self, client: H2Settings | None = None, server: H2Settings | None = None) -> None:
        self.client = H2Connection(client=True, settings=client)
        self.server = H2Connection(client=False, settings=server)
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.pump()
        self.take_client()
        self.take_server()

    def pump(self) -> None:
        """Deliver pending bytes both ways until neither side has anything to send."""
        while True:
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return
            if to_server:
                self.server_events += self.server.receive_data(to_server)
            if to_client:
                self.client_events += self.client.receive_data(to_client)

    def to_server(self, raw: bytes) -> list[Event]:
        """Inject raw frames as if the client had sent them, then pump; the server's events from then on."""
        self.pump()
        self.take_server()
        self.server_events += self.server.receive_data(raw)
        self.pump()
        return self.take_server()

    def to_client(self, raw: bytes) -> list[Event]:
        """Inject raw frames as if the server had sent them, then pump; the client's events from then on."""
        self.pump()
        self.take_client()
        self.client_events += self.client.receive_data(raw)
        self.pump()
        return self.take_client()

    def take_client(self) -> list[Event]:
        events, self.client_events = self.client_events, []
        return events

    def take_server(self) -> list[Event]:
        events, self.server_events = self.server_events, []
        return events

    def open(self, authority: str = "10.0.0.2:8080", headers: Iterable[tuple[str, str]] = ()) -> int:
        """Open a tunnel and let the server accept it with 200; returns its stream id."""
        stream_id = self.client.open_stream(authority, headers)
        self.pump()
        requests = [e for e in self.take_server() if isinstance(e, RequestReceived)]
        assert [r.stream_id for r in requests] == [stream_id]
        self.server.respond(stream_id, 200)
        self.pump()
        responses = [e for e in self.take_client() if isinstance(e, ResponseReceived)]
        assert [(r.stream_id, r.status) for r in responses] == [(stream_id, 200)]
        return stream_id


def data_of(events: Iterable[Event], stream_id: int) -> bytes:
    """The bytes `DataReceived` events carried on one stream, in order."""
    return b"".join(bytes(e.data) for e in events if isinstance(e, DataReceived) and e.stream_id == stream_id)


def acknowledge_all(conn: H2Connection, events: Iterable[Event]) -> None:
    """Acknowledge every `DataReceived`, as a consumer that wrote the bytes onward would."""
    for e in events:
        if isinstance(e, DataReceived):
            conn.acknowledge_received(e.stream_id, e.flow_controlled_length)
