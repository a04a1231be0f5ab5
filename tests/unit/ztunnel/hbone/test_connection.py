"""Two H2Connections back to back: tunnels open, carry bytes both ways, half-close, and obey flow control."""

from __future__ import annotations

import pytest
from hpack import Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.ztunnel.hbone.conftest import Pair, acknowledge_all, data_of
from ztunnel.hbone import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    H2Connection,
    H2Settings,
    NoAvailableStreamError,
    PingAcked,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    StreamStateError,
    WindowUpdated,
)
from ztunnel.hbone import frames as fr


def test_a_connect_request_carries_authority_and_headers_and_the_response_its_status() -> None:
    pair = Pair()
    sid = pair.client.open_stream("10.1.2.3:9080", [("baggage", "k=v"), ("forwarded", "for=10.0.0.1")])
    pair.pump()
    assert pair.take_server() == [
        RequestReceived(sid, "10.1.2.3:9080", [("baggage", "k=v"), ("forwarded", "for=10.0.0.1")])
    ]
    pair.server.respond(sid, 200, [("server", "meshlet")])
    pair.pump()
    assert pair.take_client() == [ResponseReceived(sid, 200, [("server", "meshlet")])]


def test_ipv6_authority_and_a_refusal_with_end_stream() -> None:
    pair = Pair()
    sid = pair.client.open_stream("[fd00::1]:443")
    pair.pump()
    assert pair.take_server() == [RequestReceived(sid, "[fd00::1]:443", [])]
    pair.server.respond(sid, 503, end_stream=True)
    pair.pump()
    assert pair.take_client() == [ResponseReceived(sid, 503, []), StreamEnded(sid)]


def test_many_streams_carry_their_own_bytes_both_ways() -> None:
    pair = Pair()
    ids = [pair.open(f"10.0.0.{i}:80") for i in range(1, 51)]
    assert len(set(ids)) == 50 and all(i % 2 == 1 for i in ids)
    for i, sid in enumerate(ids):
        assert pair.client.send_data(sid, f"request {i} ".encode() * 100) == len(f"request {i} ") * 100
        assert pair.server.send_data(sid, f"reply {i}".encode()) == len(f"reply {i}")
    pair.pump()
    server_events, client_events = pair.take_server(), pair.take_client()
    for i, sid in enumerate(ids):
        assert data_of(server_events, sid) == f"request {i} ".encode() * 100
        assert data_of(client_events, sid) == f"reply {i}".encode()
    assert pair.client.open_streams == pair.server.open_streams == 50


def test_large_writes_are_cut_into_frames_the_peer_accepts() -> None:
    pair = Pair()
    sid = pair.open()
    blob = bytes(range(256)) * 1000  # 256 000 bytes: many 16 KiB frames
    assert pair.client.send_data(sid, memoryview(blob), end_stream=True) == len(blob)
    pair.pump()
    events = pair.take_server()
    assert data_of(events, sid) == blob
    assert max(len(e.data) for e in events if isinstance(e, DataReceived)) == 16384
    assert events[-1] == StreamEnded(sid)


def test_each_direction_half_closes_on_its_own() -> None:
    pair = Pair()
    a, b = pair.open(), pair.open()
    # a: the client finishes first; the server keeps answering afterwards.
    pair.client.send_data(a, b"last words", end_stream=True)
    pair.pump()
    assert pair.take_server() == [DataReceived(a, b"last words", 10), StreamEnded(a)]
    with pytest.raises(StreamStateError):
        pair.client.send_data(a, b"more")
    pair.server.send_data(a, b"still here")
    pair.server.end_stream(a)
    pair.pump()
    assert pair.take_client() == [DataReceived(a, b"still here", 10), StreamEnded(a)]
    # b: the server finishes first; the client keeps sending afterwards.
    pair.server.end_stream(b)
    pair.pump()
    assert pair.take_client() == [StreamEnded(b)]
    pair.client.send_data(b, b"after your EOF")
    pair.client.end_stream(b)
    pair.pump()
    assert pair.take_server() == [DataReceived(b, b"after your EOF", 14), StreamEnded(b)]
    assert pair.client.open_streams == pair.server.open_streams == 0


def test_a_stream_window_stalls_the_sender_until_the_receiver_acknowledges() -> None:
    pair = Pair(server=H2Settings(initial_window_size=1000))
    sid = pair.open()
    assert pair.client.send_window(sid) == 1000
    assert pair.client.send_data(sid, bytes(1500)) == 1000
    assert pair.client.send_data(sid, bytes(500)) == 0  # stalled: nothing queued inside
    pair.pump()
    events = pair.take_server()
    assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == 1000
    pair.server.acknowledge_received(sid, 100)  # below a quarter window: not worth a frame yet
    pair.pump()
    assert pair.take_client() == []
    assert pair.client.send_window(sid) == 0
    pair.server.acknowledge_received(sid, 900)
    pair.pump()
    assert WindowUpdated(sid) in pair.take_client()
    assert pair.client.send_window(sid) == 1000
    assert pair.client.send_data(sid, bytes(500)) == 500


def test_the_connection_window_is_shared_by_all_streams() -> None:
    pair = Pair(server=H2Settings(initial_window_size=1 << 20, connection_window_size=65535))
    a, b = pair.open(), pair.open()
    assert pair.client.send_data(a, bytes(70_000)) == 65535
    assert pair.client.send_data(b, b"x") == 0  # b's own window is fine; the connection's is not
    pair.pump()
    acknowledge_all(pair.server, pair.take_server())
    pair.pump()
    assert WindowUpdated(0) in pair.take_client()
    assert pair.client.send_data(b, b"x") == 1


def test_backpressure_bounds_what_is_in_flight_without_acknowledgements() -> None:
    pair = Pair(server=H2Settings(initial_window_size=50_000))
    sid = pair.open()
    total = 0
    for _ in range(10):
        total += pair.client.send_data(sid, bytes(20_000))
        pair.pump()
    assert total == 50_000
    delivered = pair.take_server()
    assert sum(e.flow_controlled_length for e in delivered if isinstance(e, DataReceived)) == 50_000
    acknowledge_all(pair.server, delivered)
    pair.pump()
    assert pair.client.send_data(sid, bytes(20_000)) == 20_000


def test_acknowledging_bytes_that_never_arrived_is_refused() -> None:
    pair = Pair()
    with pytest.raises(ValueError):
        pair.server.acknowledge_received(1, 1)


def test_a_peer_raising_its_initial_window_grows_open_streams() -> None:
    pair = Pair()
    sid = pair.open()
    assert pair.client.send_window(sid) == 4 << 20
    events = pair.to_client(fr.settings_frame([(fr.SETTINGS_INITIAL_WINDOW_SIZE, 8 << 20)]))
    assert WindowUpdated(sid) in events
    assert pair.client.send_window(sid) == 8 << 20


def test_padded_data_counts_padding_against_the_window() -> None:
    pair = Pair()
    sid = pair.open()
    events = pair.to_server(fr.frame_header(1 + 3 + 4, fr.DATA, fr.FLAG_PADDED, sid) + b"\x04abc\0\0\0\0")
    assert events == [DataReceived(sid, b"abc", 8)]


def test_a_header_block_larger_than_a_frame_travels_in_continuation_frames() -> None:
    pair = Pair()
    big = "x" * 40_000
    sid = pair.client.open_stream("10.0.0.2:80", [("traceparent", big)])
    pair.pump()
    assert pair.take_server() == [RequestReceived(sid, "10.0.0.2:80", [("traceparent", big)])]


def test_ping_is_answered() -> None:
    pair = Pair()
    pair.client.ping(b"\x01" * 8)
    pair.pump()
    assert pair.take_client() == [PingAcked(b"\x01" * 8)]


def test_goaway_drains_open_streams_and_refuses_new_ones() -> None:
    pair = Pair()
    old = pair.open()
    unseen = pair.client.open_stream("10.0.0.2:80")  # not yet delivered when the server says goodbye
    pair.server.close()
    pair.pump()
    events = pair.take_client()
    assert events[:2] == [
        StreamReset(unseen, ErrorCode.REFUSED_STREAM, True, "refused by GOAWAY"),
        ConnectionTerminated(ErrorCode.NO_ERROR, old),
    ]
    assert [e.stream_id for e in pair.take_server() if isinstance(e, StreamReset)] == [unseen]
    assert pair.client.available_streams == 0
    with pytest.raises(NoAvailableStreamError):
        pair.client.open_stream("10.0.0.2:80")
    pair.client.send_data(old, b"still flowing", end_stream=True)
    pair.pump()
    assert data_of(pair.take_server(), old) == b"still flowing"


def test_the_peers_stream_limit_is_respected() -> None:
    pair = Pair(server=H2Settings(max_concurrent_streams=2))
    a = pair.open()
    pair.open()
    assert pair.client.available_streams == 0
    with pytest.raises(NoAvailableStreamError):
        pair.client.open_stream("10.0.0.2:80")
    pair.client.reset_stream(a)
    assert pair.client.available_streams == 1


def test_api_misuse_raises_stream_state_error() -> None:
    pair = Pair()
    sid = pair.client.open_stream("10.0.0.2:80")
    pair.pump()
    with pytest.raises(StreamStateError):
        pair.server.send_data(sid, b"too early")  # respond() first
    pair.server.respond(sid, 200)
    with pytest.raises(StreamStateError):
        pair.server.respond(sid, 200)
    pair.client.reset_stream(sid)
    pair.client.reset_stream(sid)  # idempotent
    with pytest.raises(StreamStateError):
        pair.client.send_data(sid, b"gone")
    with pytest.raises(NoAvailableStreamError):
        pair.server.open_stream("10.0.0.1:80")
    with pytest.raises(ValueError):
        pair.client.open_stream("no-port")
    with pytest.raises(ValueError):
        pair.client.open_stream("10.0.0.1:80", [("Upper", "x")])


def _client_wire(chunks: list[tuple[int, bytes, bool]]) -> bytes:
    """What a client writes for `chunks` of (stream index, bytes, end_stream) on 3 fresh streams."""
    client = H2Connection(client=True)
    ids = [client.open_stream(f"10.0.0.{i}:80") for i in (1, 2, 3)]
    ended: set[int] = set()
    for index, payload, end in chunks:
        if ids[index] not in ended:
            client.send_data(ids[index], payload, end_stream=end)
            if end:
                ended.add(ids[index])
    return client.data_to_send()


def _deliver(wire: bytes, cuts: list[int]) -> tuple[list[str], dict[int, bytes]]:
    """Feed `wire` to a fresh server in pieces cut at `cuts`; the event kinds and bytes per stream."""
    server = H2Connection(client=False)
    bounds = [0, *sorted(c % (len(wire) + 1) for c in cuts), len(wire)]
    events = [e for a, b in zip(bounds, bounds[1:], strict=False) for e in server.receive_data(wire[a:b])]
    return [type(e).__name__ for e in events], {sid: data_of(events, sid) for sid in (1, 3, 5)}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=3000), st.booleans()), max_size=12),
    st.lists(st.integers(min_value=0), max_size=40),
)
def test_any_split_of_the_wire_yields_the_same_events_and_bytes(
    chunks: list[tuple[int, bytes, bool]], cuts: list[int]
) -> None:
    wire = _client_wire(chunks)
    assert _deliver(wire, cuts) == _deliver(wire, [])


def test_the_wire_split_at_every_byte_yields_the_same_events() -> None:
    wire = _client_wire([(0, b"a" * 100, False), (1, b"b" * 20_000, True), (2, b"", True), (0, b"c", True)])
    whole = _deliver(wire, [])
    assert whole[1] == {1: b"a" * 100 + b"c", 3: b"b" * 20_000, 5: b""}
    for cut in range(len(wire) + 1):  # inside the preface, the header blocks, frame headers, payloads
        assert _deliver(wire, [cut]) == whole, cut


def test_informational_responses_are_skipped_until_the_final_one() -> None:
    pair = Pair()
    sid = pair.client.open_stream("10.0.0.2:80")
    informational = Encoder().encode([(":status", "100", True)])  # never indexed: tables stay in step
    assert pair.to_client(b"".join(fr.headers_frames(sid, informational, 16384, end_stream=False))) == []
    pair.server.respond(sid, 200)
    pair.pump()
    assert pair.take_client() == [ResponseReceived(sid, 200, [])]


def test_a_peer_shrinking_the_hpack_table_is_followed() -> None:
    pair = Pair()
    pair.to_client(fr.settings_frame([(fr.SETTINGS_HEADER_TABLE_SIZE, 0)]))
    pair.take_server()  # the client's ACK of that SETTINGS
    for _ in range(3):
        sid = pair.client.open_stream("10.0.0.2:80", [("baggage", "a=b")])
        pair.pump()
        assert pair.take_server() == [RequestReceived(sid, "10.0.0.2:80", [("baggage", "a=b")])]
