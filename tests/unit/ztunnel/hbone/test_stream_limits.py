"""Stream limits: a server takes 100 concurrent streams per connection unless told otherwise and refuses the
rest as retryable; a client stays within the server's limit, assuming 100 until the server has said."""

from __future__ import annotations

import pytest
from hpack import Encoder

from tests.unit.ztunnel.hbone.conftest import Pair
from ztunnel.hbone import (
    ASSUMED_PEER_MAX_STREAMS,
    STREAM_LIMIT_REACHED,
    ErrorCode,
    H2Connection,
    H2Settings,
    NoAvailableStreamError,
    RequestReceived,
    StreamReset,
)
from ztunnel.hbone import frames as fr

CONNECT = [(":method", "CONNECT"), (":authority", "10.0.0.2:80")]


def advertised(conn: H2Connection) -> dict[int, int]:
    """The settings in the SETTINGS frame `conn` sends first."""
    frames = fr.FrameReader(fr.MAX_MAX_FRAME_SIZE, expect_preface=conn.client).feed(conn.data_to_send())
    [(_, _, _, payload)] = [f for f in frames if f[0] == fr.SETTINGS]
    return dict(fr.parse_settings(payload))


def test_a_server_advertises_100_concurrent_streams_by_default() -> None:
    assert advertised(H2Connection(client=False))[fr.SETTINGS_MAX_CONCURRENT_STREAMS] == 100


def test_a_client_that_ignores_the_limit_gets_the_101st_stream_refused_as_retryable() -> None:
    server = H2Connection(client=False)
    server.data_to_send()
    encoder = Encoder()
    raw = fr.PREFACE + fr.settings_frame([]) + fr.SETTINGS_ACK_FRAME
    raw += b"".join(b"".join(fr.headers_frames(2 * i + 1, encoder.encode(CONNECT), 16384, False)) for i in range(101))
    events = server.receive_data(raw)
    assert sum(isinstance(e, RequestReceived) for e in events) == 100
    assert [e for e in events if isinstance(e, StreamReset)] == [
        StreamReset(201, ErrorCode.REFUSED_STREAM, False, STREAM_LIMIT_REACHED)
    ]


def test_a_new_client_opens_no_more_streams_than_assumed_before_the_servers_settings() -> None:
    client = H2Connection(client=True)
    assert not client.peer_settings_received
    assert client.available_streams == ASSUMED_PEER_MAX_STREAMS == 100
    for _ in range(100):
        client.open_stream("10.0.0.2:80")
    with pytest.raises(NoAvailableStreamError):
        client.open_stream("10.0.0.2:80")


def test_the_servers_own_limit_applies_once_its_settings_arrive() -> None:
    pair = Pair(server=H2Settings(max_concurrent_streams=5))
    assert pair.client.peer_settings_received
    assert pair.client.available_streams == 5


def test_settings_without_a_stream_limit_mean_unlimited() -> None:
    client = H2Connection(client=True)
    client.receive_data(fr.settings_frame([]))
    assert client.peer_settings_received
    assert client.available_streams > 1_000_000
