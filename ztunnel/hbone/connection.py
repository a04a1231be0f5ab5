"""The HBONE HTTP/2 connection as a sans-IO state machine: bytes in, events out; calls in, bytes out.

One `H2Connection` per TLS connection, on either side. The I/O layer feeds it what the socket read
(`receive_data`, which returns events) and writes what it produced (`data_to_send` or
`buffers_to_send`). Many CONNECT streams share the connection, so errors are kept as small as the
protocol allows: a peer mistake on one stream resets that stream (RST_STREAM plus `StreamReset`) and
never escapes to the others; only connection-level breakage raises `ProtocolError`.

Flow control is the backpressure of the tunnels, in both directions:
- Sending: `send_data` accepts as many bytes as the stream and connection windows allow and returns
  that count; the caller keeps the rest, stops reading from its source, and retries after a
  `WindowUpdated` event. Nothing is queued inside, so a slow peer slows the source socket down.
- Receiving: each `DataReceived` consumes window until the consumer calls `acknowledge_received`
  after writing the bytes onward; WINDOW_UPDATEs then go out in batches of a quarter window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from hpack import Decoder, Encoder

from ztunnel.hbone import frames as fr
from ztunnel.hbone.errors import ErrorCode, NoAvailableStreamError, ProtocolError, StreamStateError
from ztunnel.hbone.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAcked,
    RequestReceived,
    ResponseReceived,
    SettingsAcked,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from ztunnel.hbone.flow import FlowControl
from ztunnel.hbone.headers import (
    HeaderBlock,
    HeaderBlockAssembler,
    MalformedHeadersError,
    check_trailers,
    connect_request,
    decode_block,
    parse_request,
    parse_response,
    response,
)
from ztunnel.hbone.settings import H2Settings, check_peer_setting
from ztunnel.hbone.streams import Stream, StreamTable

Buffer = bytes | bytearray | memoryview
ASSUMED_PEER_MAX_STREAMS = 100
"""Streams a client opens before the server's SETTINGS say how many it takes (as the h2 crate under Istio's
ztunnel does): RFC 9113 would allow unlimited until then, but a burst at a new connection would then be
refused above the server's real limit. A first SETTINGS without the setting means unlimited."""
STREAM_LIMIT_REACHED = "SETTINGS_MAX_CONCURRENT_STREAMS reached"
"""The `StreamReset.message` of a stream refused because the peer already had its limit open."""


class H2Connection:
    """One HTTP/2 connection carrying HBONE CONNECT tunnels; `client` opens streams, a server answers.

    The preface (client magic, SETTINGS, connection WINDOW_UPDATE) is queued at construction: send
    `data_to_send()` first thing. Data passed to `send_data` is referenced, not copied, until
    `data_to_send`/`buffers_to_send` hands it out: do not mutate it before then.
    """

    def __init__(self, client: bool, settings: H2Settings | None = None) -> None:
        self.client = client
        self.settings = s = settings or H2Settings()
        self._reader = fr.FrameReader(s.max_frame_size, expect_preface=not client)
        self._out: list[Buffer] = list(s.preface(client))
        self._events: list[Event] = []
        self._encoder = Encoder()
        self._decoder = Decoder(max_header_list_size=s.max_header_list_size)
        self._table = StreamTable(client)
        self._streams = self._table.by_id  # the same dict, looked up per frame
        self._blocks = HeaderBlockAssembler(s.max_header_list_size)
        self._peer_settings_seen = False
        self._ready = False  # peer SETTINGS seen and no header block open: DATA takes the fast path
        self._dead = False
        self._goaway_sent = False
        self._goaway_received = False
        self._flow = FlowControl(s)
        self._peer_max_frame_size = fr.MIN_MAX_FRAME_SIZE
        self._peer_max_streams = ASSUMED_PEER_MAX_STREAMS

    # ----- bytes out, bytes in -----

    def data_to_send(self) -> bytes:
        """Everything queued for the peer, joined (one copy); empty when nothing is pending."""
        out, self._out = self._out, []
        return b"".join(out)

    def buffers_to_send(self) -> list[Buffer]:
        """Everything queued, as separate buffers for `writelines` (DATA payloads are not copied)."""
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes read from the peer and return the resulting events, in order.

        Raises `ProtocolError` when the peer broke the connection: call `close(err.error_code)`, flush,
        and close the socket; later input is ignored. Pass `bytes`: `DataReceived` events point into it.
        """
        if self._dead:
            return []
        if type(data) is not bytes:
            data = bytes(data)  # a caller's reusable buffer must not be aliased by DataReceived
        events: list[Event] = []
        self._events = events
        try:
            handlers = _HANDLERS
            on_data = self._on_data
            for frame_type, flags, stream_id, payload in self._reader.feed(data):
                if frame_type == 0 and self._ready:  # DATA: the data path, checked first
                    on_data(flags, stream_id, payload)
                    continue
                if not self._peer_settings_seen and (frame_type != fr.SETTINGS or flags & fr.FLAG_ACK):
                    raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "the peer's first frame is not SETTINGS")
                if self._blocks.open and frame_type != fr.CONTINUATION:
                    raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"frame type 0x{frame_type:x} inside a header block")
                handler = handlers.get(frame_type)
                if handler is not None:  # unknown frame types are ignored (RFC 9113 5.5)
                    handler(self, flags, stream_id, payload)
        except ProtocolError:
            self._dead = True
            self._table.clear()
            raise
        return events

    # ----- opening and answering streams -----

    @property
    def available_streams(self) -> int:
        """How many more streams `open_stream` may open now (0 on a server or a closing connection)."""
        if not self.client or self._goaway_sent or self._goaway_received or self._dead:
            return 0
        return max(0, min(self._peer_max_streams - self._table.open_local, self._table.ids_left()))

    @property
    def peer_settings_received(self) -> bool:
        """Whether the peer's first SETTINGS arrived: its preface is complete and its limits are known."""
        return self._peer_settings_seen

    @property
    def open_streams(self) -> int:
        """Streams not yet fully closed or reset."""
        return len(self._table)

    def open_stream(self, authority: str, headers: Iterable[tuple[str, str]] = ()) -> int:
        """(client) Send a CONNECT request for `authority` (`ip:port`) and return the new stream id."""
        if self.available_streams <= 0:
            raise NoAvailableStreamError(
                "the connection is closing or at the peer's stream limit" if self.client else "servers open no streams"
            )
        fields = connect_request(authority, headers)  # validate before HPACK state changes
        st = self._table.add(self._flow.new_stream(self._table.next_local_id))
        block = self._encoder.encode(fields)
        self._out.extend(fr.headers_frames(st.stream_id, block, self._peer_max_frame_size, end_stream=False))
        st.head_sent = True
        return st.stream_id

    def respond(
        self, stream_id: int, status: int, headers: Iterable[tuple[str, str]] = (), end_stream: bool = False
    ) -> None:
        """(server) Answer a `RequestReceived`: 200 opens the tunnel; refusals usually pass `end_stream`."""
        st = self._streams.get(stream_id)
        if st is None or self.client or st.head_sent:
            raise StreamStateError(f"stream {stream_id} cannot be answered (unknown, reset or answered)")
        block = self._encoder.encode(response(status, headers))
        self._out.extend(fr.headers_frames(stream_id, block, self._peer_max_frame_size, end_stream))
        st.head_sent = True
        if end_stream:
            self._local_end(st)

    # ----- data and flow control -----

    def send_window(self, stream_id: int) -> int:
        """Bytes `send_data` would accept now on `stream_id` (0 for unknown or closed streams)."""
        st = self._streams.get(stream_id)
        if st is None or st.local_closed or not st.head_sent:
            return 0
        return max(0, self._flow.sendable(st))

    def send_data(self, stream_id: int, data: Buffer, end_stream: bool = False) -> int:
        """Queue as much of `data` as the flow-control windows allow; return how many bytes that was.

        The caller keeps `data[accepted:]` and offers it again after a `WindowUpdated` for this stream
        or for the connection (0). `end_stream` takes effect only when all of `data` was accepted.
        Raises `StreamStateError` if the stream is unknown, reset, ended by us, or not yet answered.
        """
        st = self._streams.get(stream_id)
        if st is None or st.local_closed or not st.head_sent:
            raise StreamStateError(f"stream {stream_id} is not open for sending")
        total = len(data)
        accepted = min(total, self._flow.sendable(st))
        if accepted <= 0:
            if total == 0 and end_stream:
                self.end_stream(stream_id)
            return 0
        end = end_stream and accepted == total
        out = self._out
        size = self._peer_max_frame_size
        if accepted <= size:
            out.append(fr.data_header(stream_id, accepted, end))
            out.append(data if accepted == total else memoryview(data)[:accepted])
        else:
            view = memoryview(data)
            for offset in range(0, accepted, size):
                n = min(size, accepted - offset)
                out.append(fr.data_header(stream_id, n, end and offset + n == accepted))
                out.append(view[offset : offset + n])
        self._flow.sent(st, accepted)
        if end:
            self._local_end(st)
        return accepted

    def end_stream(self, stream_id: int) -> None:
        """Half-close our side (empty DATA with END_STREAM): the peer reads EOF, we can still receive."""
        st = self._streams.get(stream_id)
        if st is None or st.local_closed or not st.head_sent:
            raise StreamStateError(f"stream {stream_id} is not open for sending")
        self._out.append(fr.data_header(stream_id, 0, True))
        self._local_end(st)

    def acknowledge_received(self, stream_id: int, length: int) -> None:
        """Give back `length` bytes of window once received data was written onward (or dropped).

        Also valid after the stream closed: the connection window still needs the bytes back.
        """
        if length > 0:
            self._flow.acknowledge(self._streams.get(stream_id), length, self._out)

    # ----- ending streams and the connection -----

    def reset_stream(self, stream_id: int, error_code: int = ErrorCode.CANCEL) -> None:
        """Abort a stream both ways (RST_STREAM). A no-op if the stream is already gone."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        self._table.forget(st)
        self._table.remember_reset(stream_id)
        self._out.append(fr.rst_stream_frame(stream_id, error_code))

    def close(self, error_code: int = ErrorCode.NO_ERROR, message: str = "") -> None:
        """Send GOAWAY. With NO_ERROR open streams may finish (drain); otherwise the connection is over."""
        if self._goaway_sent and error_code == ErrorCode.NO_ERROR:
            return
        self._goaway_sent = True
        self._out.append(fr.goaway_frame(self._table.last_peer_id, error_code, message.encode()[:256]))
        if error_code != ErrorCode.NO_ERROR:
            self._dead = True
            self._table.clear()

    def ping(self, opaque: bytes = b"\0" * 8) -> None:
        """Send a PING; the peer's answer arrives as `PingAcked`."""
        self._out.append(fr.ping_frame(opaque))

    # ----- frames about streams -----

    def _on_data(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        length = len(payload)  # padding included: it counts against the windows too
        if stream_id == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        self._flow.receive(length)
        if flags & fr.FLAG_PADDED:
            payload = fr.strip_padding(payload, "DATA")
        st = self._streams.get(stream_id)
        if st is None or st.remote_closed or not st.head_received or length > st.recv_window:
            self._flow.acknowledge(None, length, self._out)  # no consumer will: return it now
            if st is None:
                self._on_absent_stream(stream_id, "DATA")
            elif st.remote_closed:
                self._stream_error(st, ErrorCode.STREAM_CLOSED, "DATA after END_STREAM")
            elif not st.head_received:
                self._stream_error(st, ErrorCode.PROTOCOL_ERROR, "DATA before the response HEADERS")
            else:
                self._stream_error(st, ErrorCode.FLOW_CONTROL_ERROR, f"DATA of {length} bytes beyond the stream window")
            return
        st.recv_window -= length
        if length:
            self._events.append(DataReceived(stream_id, payload, length))
        if flags & fr.FLAG_END_STREAM:
            self._remote_end(st)

    def _on_headers(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        block = self._blocks.headers(flags, stream_id, payload)
        if block is None:
            self._ready = False  # CONTINUATION must follow: DATA may not take the fast path
        else:
            self._on_header_block(block)

    def _on_continuation(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        block = self._blocks.continuation(flags, stream_id, payload)
        if block is not None:
            self._ready = True
            self._on_header_block(block)

    def _on_header_block(self, block: HeaderBlock) -> None:
        fields = decode_block(self._decoder, block.block)  # always decoded: keeps the HPACK table in step
        stream_id, end_stream, self_dependent = block.stream_id, block.end_stream, block.self_dependent
        st = self._streams.get(stream_id)
        if st is None:
            table = self._table
            if self.client or table.is_ours(stream_id) or table.was_reset(stream_id) or not table.is_idle(stream_id):
                self._on_absent_stream(stream_id, "HEADERS")
            else:
                self._on_request(stream_id, fields, end_stream, self_dependent)
            return
        if st.remote_closed:
            self._stream_error(st, ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM")
            return
        try:
            if self_dependent:
                raise MalformedHeadersError("the stream depends on itself")
            if self.client and not st.head_received:
                status, headers = parse_response(fields)
                if status == 101 or (status < 200 and end_stream):
                    raise MalformedHeadersError(f"response status {status} is not allowed here")
                if status < 200:
                    return  # informational: the final response follows
                st.head_received = True
                self._events.append(ResponseReceived(stream_id, status, headers))
            else:
                if not end_stream:
                    raise MalformedHeadersError("trailers without END_STREAM")
                check_trailers(fields)  # then dropped: tunnels have no use for trailers
        except MalformedHeadersError as err:
            self._stream_error(st, ErrorCode.PROTOCOL_ERROR, str(err))
            return
        if end_stream:
            self._remote_end(st)

    def _on_request(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool, self_dependent: bool
    ) -> None:
        self._table.last_peer_id = stream_id
        if self._goaway_sent:
            self._send_reset(stream_id, ErrorCode.REFUSED_STREAM, "stream opened after our GOAWAY")
            return
        if self._table.open_remote >= self.settings.max_concurrent_streams:
            self._send_reset(stream_id, ErrorCode.REFUSED_STREAM, STREAM_LIMIT_REACHED)
            return
        try:
            if self_dependent:
                raise MalformedHeadersError("the stream depends on itself")
            request = parse_request(fields)
        except MalformedHeadersError as err:
            self._send_reset(stream_id, ErrorCode.PROTOCOL_ERROR, f"malformed request: {err}")
            return
        if request.method != "CONNECT":
            # HBONE only tunnels. Answer 405 and ask the client to stop sending (RFC 9113 8.1).
            block = self._encoder.encode(response(405, []))
            self._out.extend(fr.headers_frames(stream_id, block, self._peer_max_frame_size, end_stream=True))
            self._send_reset(stream_id, ErrorCode.NO_ERROR, f"method {request.method} answered with 405")
            return
        st = self._table.add(self._flow.new_stream(stream_id))
        st.head_received = True
        self._events.append(RequestReceived(stream_id, request.authority, request.headers))
        if end_stream:
            self._remote_end(st)

    def _on_window_update(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        increment = fr.parse_u32(payload, "WINDOW_UPDATE") & 0x7FFFFFFF
        if stream_id == 0:
            self._flow.grant_connection(increment)
            self._events.append(WindowUpdated(0))
            return
        st = self._streams.get(stream_id)
        if st is None:
            if self._table.is_idle(stream_id):
                raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # closed: the update crossed our END_STREAM or RST_STREAM, which RFC 9113 5.1 allows
        problem = self._flow.grant_stream(st, increment)
        if problem:
            self._stream_error(
                st, ErrorCode.PROTOCOL_ERROR if increment == 0 else ErrorCode.FLOW_CONTROL_ERROR, problem
            )
        elif st.head_sent and not st.local_closed:
            self._events.append(WindowUpdated(stream_id))

    def _on_rst_stream(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        code = fr.parse_u32(payload, "RST_STREAM")
        if stream_id == 0 or self._table.is_idle(stream_id):
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on stream {stream_id} (idle or 0)")
        st = self._streams.get(stream_id)
        if st is not None:
            self._table.forget(st)
            self._events.append(StreamReset(stream_id, code, remote=True))

    def _on_priority(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        # Prioritization is deprecated (RFC 9113 5.3.2) and meaningless for tunnels: check, then drop.
        if stream_id == 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) == 5 and fr.parse_u32(payload[:4], "PRIORITY") & 0x7FFFFFFF != stream_id:
            return
        code = ErrorCode.FRAME_SIZE_ERROR if len(payload) != 5 else ErrorCode.PROTOCOL_ERROR
        st = self._streams.get(stream_id)
        if st is not None:
            self._stream_error(st, code, "invalid PRIORITY frame")
        elif not self._table.was_reset(stream_id):
            self._send_reset(stream_id, code, "invalid PRIORITY frame")

    # ----- frames about the connection -----

    def _on_settings(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        if stream_id != 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"SETTINGS on stream {stream_id}")
        if flags & fr.FLAG_ACK:
            if payload:
                raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._flow.local_settings_acked(self._table)
            self._events.append(SettingsAcked())
            return
        values = fr.parse_settings(payload)
        if not self._peer_settings_seen and all(ident != fr.SETTINGS_MAX_CONCURRENT_STREAMS for ident, _ in values):
            self._peer_max_streams = fr.MAX_STREAM_ID  # not advertised: unlimited (RFC 9113 6.5.2)
        for ident, value in values:
            check_peer_setting(ident, value, self.client)
            if ident == fr.SETTINGS_HEADER_TABLE_SIZE:
                # We may use less than the peer allows; 4096 bounds our memory per connection.
                self._encoder.header_table_size = min(value, 4096)
            elif ident == fr.SETTINGS_MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
            elif ident == fr.SETTINGS_INITIAL_WINDOW_SIZE:
                for st in self._flow.peer_initial_window(value, self._table):
                    if st.head_sent and not st.local_closed:
                        self._events.append(WindowUpdated(st.stream_id))
            elif ident == fr.SETTINGS_MAX_FRAME_SIZE:
                self._peer_max_frame_size = value
        self._out.append(fr.SETTINGS_ACK_FRAME)
        self._peer_settings_seen = True
        self._ready = not self._blocks.open

    def _on_ping(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        if stream_id != 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"PING on stream {stream_id}")
        if len(payload) != 8:
            raise ProtocolError(ErrorCode.FRAME_SIZE_ERROR, f"PING length {len(payload)} is not 8")
        if flags & fr.FLAG_ACK:
            self._events.append(PingAcked(bytes(payload)))
        else:
            self._out.append(fr.ping_frame(bytes(payload), ack=True))

    def _on_goaway(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        if stream_id != 0:
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"GOAWAY on stream {stream_id}")
        last, code, debug = fr.parse_goaway(payload)
        self._goaway_received = True
        # Our streams above `last` were never processed by the peer: refused, hence safe to retry.
        for st in self._table:
            if st.stream_id > last and self._table.is_ours(st.stream_id):
                self._table.forget(st)
                self._events.append(StreamReset(st.stream_id, ErrorCode.REFUSED_STREAM, True, "refused by GOAWAY"))
        self._events.append(ConnectionTerminated(code, last, debug))

    def _on_push_promise(self, flags: int, stream_id: int, payload: fr.Payload) -> None:
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE, but server push is disabled")

    # ----- stream endings -----

    def _on_absent_stream(self, stream_id: int, frame_name: str) -> None:
        """DATA or HEADERS for a stream not in the table."""
        if self._table.was_reset(stream_id):
            return  # sent before the peer saw our RST_STREAM: ignore (RFC 9113 5.1, "closed")
        if self._table.is_idle(stream_id):
            raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"{frame_name} on idle stream {stream_id}")
        self._send_reset(stream_id, ErrorCode.STREAM_CLOSED, f"{frame_name} on a closed stream")

    def _stream_error(self, st: Stream, error_code: int, message: str) -> None:
        self._table.forget(st)
        self._send_reset(st.stream_id, error_code, message)

    def _send_reset(self, stream_id: int, error_code: int, message: str) -> None:
        # Reported even for streams the caller never saw (refused or malformed requests) so that it
        # can count and log them: nothing is dropped silently.
        self._out.append(fr.rst_stream_frame(stream_id, error_code))
        self._table.remember_reset(stream_id)
        self._events.append(StreamReset(stream_id, error_code, False, message))

    def _remote_end(self, st: Stream) -> None:
        st.remote_closed = True
        self._events.append(StreamEnded(st.stream_id))
        if st.local_closed:
            self._table.forget(st)

    def _local_end(self, st: Stream) -> None:
        st.local_closed = True
        if st.remote_closed:
            self._table.forget(st)


# Per class, not per connection: a table of bound methods on each connection would be a reference cycle
# (connection -> table -> method -> connection), so a closed connection, its HPACK tables and everything
# holding it (its TLS transport too) would wait for the cyclic garbage collector instead of being freed at once.
_HANDLERS: dict[int, Callable[[H2Connection, int, int, fr.Payload], None]] = {
    fr.DATA: H2Connection._on_data,
    fr.HEADERS: H2Connection._on_headers,
    fr.CONTINUATION: H2Connection._on_continuation,
    fr.SETTINGS: H2Connection._on_settings,
    fr.WINDOW_UPDATE: H2Connection._on_window_update,
    fr.RST_STREAM: H2Connection._on_rst_stream,
    fr.PING: H2Connection._on_ping,
    fr.GOAWAY: H2Connection._on_goaway,
    fr.PRIORITY: H2Connection._on_priority,
    fr.PUSH_PROMISE: H2Connection._on_push_promise,
}
