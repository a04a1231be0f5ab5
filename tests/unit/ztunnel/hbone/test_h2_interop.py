"""Our HTTP/2 framing against the reference: the `h2` library reads what `H2Connection` writes, and the other way.

HBONE's framing is hand-written for speed, so these tests check it against a second, independent
implementation: each side's bytes are fed to the other in memory (no sockets), in both roles (our client with
an h2 server, an h2 client with our server). They cover what HBONE uses: the preface and SETTINGS (windows,
frame size, max concurrent streams), CONNECT and its response, DATA both ways under flow control with
WINDOW_UPDATEs, END_STREAM, trailers, RST_STREAM, GOAWAY, PING, and header blocks split over CONTINUATION.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.settings import SettingCodes

from ztunnel import hbone
from ztunnel.hbone import ErrorCode, H2Connection, H2Settings

AUTHORITY = "10.0.0.2:8080"
H2_DEFAULT_WINDOW = 65535


class Wire:
    """Our `H2Connection` and an h2 connection back to back; `pump()` moves bytes until both are quiet."""

    def __init__(self, ours_is_client: bool, settings: H2Settings | None = None) -> None:
        self.ours = H2Connection(client=ours_is_client, settings=settings)
        config = h2.config.H2Configuration(client_side=not ours_is_client, header_encoding="utf-8")
        self.theirs = h2.connection.H2Connection(config=config)
        self.theirs.initiate_connection()
        self.our_events: list[hbone.Event] = []
        self.their_events: list[h2.events.Event] = []
        self.pump()

    def pump(self) -> None:
        # The client's bytes go first: a server expects the client magic before anything else.
        ours_first = self.ours.client
        while True:
            to_theirs, to_ours = self.ours.data_to_send(), self.theirs.data_to_send()
            if not to_theirs and not to_ours:
                return
            if ours_first and to_theirs:
                self.their_events += self.theirs.receive_data(to_theirs)
            if to_ours:
                self.our_events += self.ours.receive_data(to_ours)
            if not ours_first and to_theirs:
                self.their_events += self.theirs.receive_data(to_theirs)

    def take_ours(self) -> list[hbone.Event]:
        events, self.our_events = self.our_events, []
        return events

    def take_theirs(self) -> list[h2.events.Event]:
        events, self.their_events = self.their_events, []
        return events


def of(kind: type[Any], events: Iterable[object]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def their_data(events: Iterable[h2.events.Event], stream_id: int) -> bytes:
    return b"".join(e.data for e in of(h2.events.DataReceived, events) if e.stream_id == stream_id)


def our_data(events: Iterable[hbone.Event], stream_id: int) -> bytes:
    return b"".join(bytes(e.data) for e in of(hbone.DataReceived, events) if e.stream_id == stream_id)


def their_send(wire: Wire, stream_id: int, data: bytes, end_stream: bool = False) -> None:
    """h2 sends `data` as frames of the size we allow (h2 leaves the splitting to its caller)."""
    size = wire.theirs.max_outbound_frame_size
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    for i, chunk in enumerate(chunks):
        wire.theirs.send_data(stream_id, chunk, end_stream=end_stream and i == len(chunks) - 1)


def our_tunnel(wire: Wire, headers: Iterable[tuple[str, str]] = ()) -> int:
    """Our client opens a CONNECT tunnel; the h2 server answers 200."""
    stream_id = wire.ours.open_stream(AUTHORITY, headers)
    wire.pump()
    [request] = of(h2.events.RequestReceived, wire.take_theirs())
    assert request.stream_id == stream_id
    wire.theirs.send_headers(stream_id, [(":status", "200")])
    wire.pump()
    [response] = of(hbone.ResponseReceived, wire.take_ours())
    assert (response.stream_id, response.status) == (stream_id, 200)
    return stream_id


def their_tunnel(wire: Wire, stream_id: int = 1, headers: Iterable[tuple[str, str]] = ()) -> int:
    """The h2 client opens a CONNECT tunnel; our server answers 200."""
    wire.theirs.send_headers(stream_id, [(":method", "CONNECT"), (":authority", AUTHORITY), *headers])
    wire.pump()
    [request] = of(hbone.RequestReceived, wire.take_ours())
    assert (request.stream_id, request.authority) == (stream_id, AUTHORITY)
    wire.ours.respond(stream_id, 200)
    wire.pump()
    [response] = of(h2.events.ResponseReceived, wire.take_theirs())
    assert dict(response.headers)[":status"] == "200"
    return stream_id


# ----- the preface and SETTINGS -----


@pytest.mark.parametrize("ours_is_client", [True, False], ids=["our-client", "our-server"])
def test_each_side_applies_the_others_settings(ours_is_client: bool) -> None:
    wire = Wire(ours_is_client, H2Settings(max_concurrent_streams=7, initial_window_size=100_000))

    their_view = wire.theirs.remote_settings
    assert their_view.max_concurrent_streams == 7
    assert their_view.initial_window_size == 100_000
    assert their_view.max_frame_size == 16384
    assert wire.theirs.outbound_flow_control_window == H2Settings().connection_window_size  # our WINDOW_UPDATE
    assert of(h2.events.SettingsAcknowledged, wire.their_events)  # we acked h2's SETTINGS
    assert of(hbone.SettingsAcked, wire.our_events)  # and h2 acked ours
    assert wire.ours.peer_settings_received


def test_the_h2_servers_stream_limit_bounds_our_client() -> None:
    wire = Wire(ours_is_client=True)
    wire.theirs.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    wire.pump()
    assert wire.ours.available_streams == 2
    first, second = wire.ours.open_stream(AUTHORITY), wire.ours.open_stream(AUTHORITY)
    assert wire.ours.available_streams == 0
    with pytest.raises(hbone.NoAvailableStreamError):
        wire.ours.open_stream(AUTHORITY)
    wire.pump()
    assert [r.stream_id for r in of(h2.events.RequestReceived, wire.take_theirs())] == [first, second]


def test_the_h2_client_keeps_to_our_servers_stream_limit() -> None:
    wire = Wire(ours_is_client=False, settings=H2Settings(max_concurrent_streams=1))
    their_tunnel(wire, 1)
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        wire.theirs.send_headers(3, [(":method", "CONNECT"), (":authority", AUTHORITY)])


# ----- CONNECT -----


def test_our_connect_request_and_its_headers_reach_an_h2_server() -> None:
    wire = Wire(ours_is_client=True)
    stream_id = wire.ours.open_stream(AUTHORITY, [("forwarded", 'for="10.0.0.1"'), ("baggage", "k=v")])
    wire.pump()
    [request] = of(h2.events.RequestReceived, wire.take_theirs())
    assert request.stream_id == stream_id
    assert request.headers == [
        (":method", "CONNECT"),
        (":authority", AUTHORITY),
        ("forwarded", 'for="10.0.0.1"'),
        ("baggage", "k=v"),
    ]
    wire.theirs.send_headers(stream_id, [(":status", "503"), ("x-reason", "busy")], end_stream=True)
    wire.pump()
    events = wire.take_ours()
    [response] = of(hbone.ResponseReceived, events)
    assert (response.status, response.headers) == (503, [("x-reason", "busy")])
    assert [e.stream_id for e in of(hbone.StreamEnded, events)] == [stream_id]


def test_an_h2_clients_connect_reaches_our_server_and_our_answers_reach_it() -> None:
    wire = Wire(ours_is_client=False)
    their_tunnel(wire, 1, [("forwarded", 'for="10.0.0.1"')])

    wire.theirs.send_headers(3, [(":method", "CONNECT"), (":authority", "10.0.0.3:80")])
    wire.pump()
    [request] = of(hbone.RequestReceived, wire.take_ours())
    wire.ours.respond(request.stream_id, 403, [("x-reason", "denied")], end_stream=True)
    wire.pump()
    events = wire.take_theirs()
    [response] = of(h2.events.ResponseReceived, events)
    assert response.headers == [(":status", "403"), ("x-reason", "denied")]
    assert [e.stream_id for e in of(h2.events.StreamEnded, events)] == [3]


def test_a_request_that_is_not_connect_is_answered_405_and_reset_without_error() -> None:
    wire = Wire(ours_is_client=False)
    wire.theirs.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "x")])
    wire.pump()
    assert of(hbone.RequestReceived, wire.take_ours()) == []
    events = wire.take_theirs()
    [response] = of(h2.events.ResponseReceived, events)
    assert dict(response.headers)[":status"] == "405"
    assert [e.stream_id for e in of(h2.events.StreamEnded, events)] == [1]
    assert [(e.stream_id, e.error_code) for e in of(h2.events.StreamReset, events)] == [(1, ErrorCode.NO_ERROR)]


def test_header_blocks_split_over_continuation_are_read_both_ways() -> None:
    big = "x" * 40_000  # more than a 16 KiB frame: HEADERS plus CONTINUATION frames
    ours_sending = Wire(ours_is_client=True)
    ours_sending.ours.open_stream(AUTHORITY, [("x-big", big)])
    ours_sending.pump()
    [theirs_got] = of(h2.events.RequestReceived, ours_sending.take_theirs())
    assert dict(theirs_got.headers)["x-big"] == big

    theirs_sending = Wire(ours_is_client=False)  # h2 splits it the same way; our server reassembles it
    theirs_sending.theirs.send_headers(1, [(":method", "CONNECT"), (":authority", AUTHORITY), ("x-big", big)])
    theirs_sending.pump()
    [ours_got] = of(hbone.RequestReceived, theirs_sending.take_ours())
    assert ours_got.headers == [("x-big", big)]


# ----- DATA and flow control -----


def test_data_flows_both_ways_within_the_h2_servers_windows() -> None:
    wire = Wire(ours_is_client=True)
    stream_id = our_tunnel(wire)
    upload = bytes(range(256)) * 1200  # 300 KiB: several windows of h2's default 65535
    sent = wire.ours.send_data(stream_id, upload)
    assert sent == H2_DEFAULT_WINDOW  # no more than h2 allowed
    wire.pump()
    received = their_data(wire.take_theirs(), stream_id)
    acknowledged = 0
    while sent < len(upload):
        assert wire.ours.send_window(stream_id) == 0  # waits for h2's WINDOW_UPDATE
        wire.theirs.acknowledge_received_data(len(received) - acknowledged, stream_id)
        acknowledged = len(received)
        wire.pump()
        assert {e.stream_id for e in of(hbone.WindowUpdated, wire.take_ours())} <= {0, stream_id}
        before = sent
        sent += wire.ours.send_data(stream_id, memoryview(upload)[sent:])
        assert sent > before
        wire.pump()
        received += their_data(wire.take_theirs(), stream_id)
    assert received == upload

    download = bytes(range(255, -1, -1)) * 1000
    their_send(wire, stream_id, download, end_stream=True)  # within our 4 MiB windows
    wire.pump()
    events = wire.take_ours()
    assert our_data(events, stream_id) == download
    assert [e.stream_id for e in of(hbone.StreamEnded, events)] == [stream_id]


def test_our_windows_bound_the_h2_sender_and_our_acknowledgements_reopen_them() -> None:
    window = 20_000
    wire = Wire(ours_is_client=False, settings=H2Settings(initial_window_size=window))
    stream_id = their_tunnel(wire)
    assert wire.theirs.local_flow_control_window(stream_id) == window

    payload = b"y" * window
    their_send(wire, stream_id, payload)
    wire.pump()
    events = wire.take_ours()
    assert our_data(events, stream_id) == payload
    assert wire.theirs.local_flow_control_window(stream_id) == 0
    with pytest.raises(h2.exceptions.FlowControlError):
        wire.theirs.send_data(stream_id, b"z")

    for e in of(hbone.DataReceived, events):
        wire.ours.acknowledge_received(e.stream_id, e.flow_controlled_length)
    wire.pump()
    assert of(h2.events.WindowUpdated, wire.take_theirs())
    # We give window back in batches (a quarter window at least), so up to a quarter may still be pending.
    reopened = wire.theirs.local_flow_control_window(stream_id)
    assert window * 3 // 4 <= reopened <= window
    their_send(wire, stream_id, b"z" * reopened)
    wire.pump()
    assert our_data(wire.take_ours(), stream_id) == b"z" * reopened

    wire.ours.send_data(stream_id, b"reply", end_stream=True)
    wire.pump()
    events2 = wire.take_theirs()
    assert their_data(events2, stream_id) == b"reply"
    assert [e.stream_id for e in of(h2.events.StreamEnded, events2)] == [stream_id]


def test_data_larger_than_a_frame_is_split_as_h2_expects() -> None:
    wire = Wire(ours_is_client=False)
    stream_id = their_tunnel(wire)
    payload = b"q" * 50_000  # h2's window is 65535; frames are at most its 16384
    assert wire.ours.send_data(stream_id, payload) == len(payload)
    wire.pump()
    frames = of(h2.events.DataReceived, wire.take_theirs())
    assert b"".join(f.data for f in frames) == payload
    assert max(len(f.data) for f in frames) <= 16384


def test_trailers_from_h2_end_the_stream_at_our_server_without_a_reset() -> None:
    wire = Wire(ours_is_client=False)
    stream_id = their_tunnel(wire)
    wire.theirs.send_data(stream_id, b"body")
    wire.theirs.send_headers(stream_id, [("x-checksum", "abc")], end_stream=True)
    wire.pump()
    events = wire.take_ours()
    assert our_data(events, stream_id) == b"body"
    assert [e.stream_id for e in of(hbone.StreamEnded, events)] == [stream_id]
    assert of(hbone.StreamReset, events) == []
    assert of(h2.events.StreamReset, wire.take_theirs()) == []


# ----- RST_STREAM, GOAWAY, PING -----


@pytest.mark.parametrize("ours_is_client", [True, False], ids=["our-client", "our-server"])
def test_resets_reach_the_other_side_with_their_code(ours_is_client: bool) -> None:
    wire = Wire(ours_is_client)
    stream_id = our_tunnel(wire) if ours_is_client else their_tunnel(wire)
    wire.ours.reset_stream(stream_id, ErrorCode.CANCEL)
    wire.pump()
    [reset] = of(h2.events.StreamReset, wire.take_theirs())
    assert (reset.stream_id, reset.error_code, reset.remote_reset) == (stream_id, ErrorCode.CANCEL, True)

    other = our_tunnel(wire) if ours_is_client else their_tunnel(wire, 3)
    wire.theirs.reset_stream(other, ErrorCode.REFUSED_STREAM)
    wire.pump()
    [ours] = of(hbone.StreamReset, wire.take_ours())
    assert (ours.stream_id, ours.error_code, ours.remote) == (other, ErrorCode.REFUSED_STREAM, True)
    assert wire.ours.open_streams == 0


def test_our_goaway_reaches_h2_with_the_last_stream_we_took() -> None:
    wire = Wire(ours_is_client=False)
    their_tunnel(wire, 1)
    their_tunnel(wire, 3)
    wire.ours.close(ErrorCode.NO_ERROR, "draining")
    wire.pump()
    [goaway] = of(h2.events.ConnectionTerminated, wire.take_theirs())
    assert (goaway.error_code, goaway.last_stream_id, goaway.additional_data) == (0, 3, b"draining")


def test_an_h2_goaway_refuses_our_streams_above_its_last_stream_id() -> None:
    wire = Wire(ours_is_client=True)
    first = our_tunnel(wire)
    later = wire.ours.open_stream(AUTHORITY)  # h2 receives it but goes away without taking it
    wire.pump()
    wire.theirs.close_connection(ErrorCode.NO_ERROR, last_stream_id=first)
    wire.pump()
    events = wire.take_ours()
    [refused] = of(hbone.StreamReset, events)
    assert (refused.stream_id, refused.error_code) == (later, ErrorCode.REFUSED_STREAM)
    [goaway] = of(hbone.ConnectionTerminated, events)
    assert (goaway.error_code, goaway.last_stream_id) == (0, first)
    assert wire.ours.available_streams == 0
    # At or below the last stream id, a stream runs to completion (h2 itself takes no frames once it sent GOAWAY).
    assert wire.ours.open_streams == 1 and wire.ours.send_window(first) > 0


@pytest.mark.parametrize("ours_is_client", [True, False], ids=["our-client", "our-server"])
def test_pings_are_answered_both_ways(ours_is_client: bool) -> None:
    wire = Wire(ours_is_client)
    wire.take_ours(), wire.take_theirs()
    wire.ours.ping(b"12345678")
    wire.pump()
    assert [e.data for e in of(hbone.PingAcked, wire.take_ours())] == [b"12345678"]
    wire.theirs.ping(b"abcdefgh")
    wire.pump()
    assert [e.ping_data for e in of(h2.events.PingAckReceived, wire.take_theirs())] == [b"abcdefgh"]
