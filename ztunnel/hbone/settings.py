"""HTTP/2 settings for HBONE: what we advertise, and the checks on what the peer advertises.

Defaults favour throughput, as Istio's ztunnel does: tunnels are bulk TCP, so a 4 MiB stream window
and a 16 MiB connection window keep a fast sender from stalling on round trips.
"""

from __future__ import annotations

from dataclasses import dataclass

from ztunnel.hbone import frames as fr
from ztunnel.hbone.errors import ErrorCode, ProtocolError


@dataclass(frozen=True, slots=True)
class H2Settings:
    """What this endpoint advertises and enforces."""

    initial_window_size: int = 4 * 1024 * 1024
    """Receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE)."""
    connection_window_size: int = 16 * 1024 * 1024
    """Receive window shared by all streams, raised from 65535 by a WINDOW_UPDATE at start."""
    max_frame_size: int = fr.MIN_MAX_FRAME_SIZE
    """Largest frame payload we accept (SETTINGS_MAX_FRAME_SIZE)."""
    max_concurrent_streams: int = 100
    """Streams the peer may have open at once; more are refused with REFUSED_STREAM. 100 as Istio's ztunnel:
    each inbound stream holds a socket to the app, so this bounds what one connection takes of the fds."""
    max_header_list_size: int = 64 * 1024
    """Largest decoded header list we accept (SETTINGS_MAX_HEADER_LIST_SIZE)."""

    def __post_init__(self) -> None:
        if not 1 <= self.initial_window_size <= fr.MAX_WINDOW_SIZE:
            raise ValueError(f"initial_window_size {self.initial_window_size} is outside 1..2^31-1")
        if not fr.DEFAULT_WINDOW_SIZE <= self.connection_window_size <= fr.MAX_WINDOW_SIZE:
            raise ValueError(f"connection_window_size {self.connection_window_size} is outside 65535..2^31-1")
        if not fr.MIN_MAX_FRAME_SIZE <= self.max_frame_size <= fr.MAX_MAX_FRAME_SIZE:
            raise ValueError(f"max_frame_size {self.max_frame_size} is outside 16384..2^24-1")
        if self.max_concurrent_streams < 0 or self.max_header_list_size < 0:
            raise ValueError("max_concurrent_streams and max_header_list_size cannot be negative")

    def preface(self, client: bool) -> list[bytes]:
        """What an endpoint sends first: the client magic, our SETTINGS, the connection WINDOW_UPDATE."""
        values = [
            (fr.SETTINGS_MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (fr.SETTINGS_INITIAL_WINDOW_SIZE, self.initial_window_size),
            (fr.SETTINGS_MAX_FRAME_SIZE, self.max_frame_size),
            (fr.SETTINGS_MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]
        out = []
        if client:
            out.append(fr.PREFACE)
            values.insert(0, (fr.SETTINGS_ENABLE_PUSH, 0))  # we never want pushed streams
        out.append(fr.settings_frame(values))
        if self.connection_window_size > fr.DEFAULT_WINDOW_SIZE:
            out.append(fr.window_update_frame(0, self.connection_window_size - fr.DEFAULT_WINDOW_SIZE))
        return out


def check_peer_setting(ident: int, value: int, client: bool) -> None:
    """Raise `ProtocolError` for a value RFC 9113 6.5.2 (or RFC 8441) forbids; unknown ids are fine."""
    if ident == fr.SETTINGS_ENABLE_PUSH and (value > 1 or (client and value == 1)):
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
    if ident == fr.SETTINGS_INITIAL_WINDOW_SIZE and value > fr.MAX_WINDOW_SIZE:
        raise ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
    if ident == fr.SETTINGS_MAX_FRAME_SIZE and not fr.MIN_MAX_FRAME_SIZE <= value <= fr.MAX_MAX_FRAME_SIZE:
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
    if ident == fr.SETTINGS_ENABLE_CONNECT_PROTOCOL and value > 1:
        raise ProtocolError(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_ENABLE_CONNECT_PROTOCOL {value}")
