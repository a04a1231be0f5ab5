"""Limits on what one peer may hold of this node's HBONE server (15008), and the counts they are checked on.

Every inbound stream holds a socket to the app and every HBONE connection a TLS socket, all from one
process-wide file-descriptor budget (RLIMIT_NOFILE). Without limits one misbehaving peer could take all of
it, and every other call through the node would then fail with EMFILE until that peer let go. So:
- streams per connection are bounded by SETTINGS_MAX_CONCURRENT_STREAMS, which the H2 layer advertises and
  enforces (a peer that ignores it has the excess refused with RST_STREAM REFUSED_STREAM);
- connections and concurrent streams are bounded per source identity and per source IP, node-wide (all
  served pods together, since the budget is shared); a peer is both, and each is checked;
- a TLS connection that never sends the HTTP/2 preface is closed after `preface_timeout`, and one that
  carries no stream for `idle_timeout` is closed with GOAWAY.

A stream refused for a limit is reset with REFUSED_STREAM: HTTP/2 defines it as "not processed", so a
client may retry it safely (elsewhere, or later). A connection over the limit gets our SETTINGS and a
GOAWAY(ENHANCE_YOUR_CALM) and is closed, so a well-behaved client learns why.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from ztunnel.hbone import H2Settings

STREAMS_PER_CONNECTION = 100
"""Istio's ztunnel default (and what HTTP/2 implementations commonly advertise)."""
PREFACE_TIMEOUT = 10.0
"""Seconds from the end of the TLS handshake to the client's preface and SETTINGS: a client sends them at
once, so this only ever ends connections that were opened to be held."""
IDLE_TIMEOUT = 60.0
"""Seconds an inbound connection may carry no stream. Longer than the client pool's idle timeout (30 s),
so a meshlet client normally closes first and never races a new stream against our GOAWAY."""
_UNLIMITED_FDS = 1 << 20
"""What RLIM_INFINITY is taken as for the shares below."""


def raise_fd_limit(target: int = _UNLIMITED_FDS) -> int:
    """Raise RLIMIT_NOFILE to `target` (as container runtimes give a node proxy), or at least the soft limit to
    the hard one (as Istio's ztunnel does): every proxied connection costs two sockets, and an inherited soft
    limit (often 1,024, here 20,000) would cap a node at a few thousand and make the per-peer shares below
    refuse a single busy client. Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft limit
    goes as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            target = min(target, int(f.read()))
    except (OSError, ValueError):
        pass
    for wanted in ((target, target), (hard, hard)):
        if soft >= wanted[0] and hard >= wanted[1]:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted[0]), max(hard, wanted[1])))
            break
        except (ValueError, OSError):
            continue  # not allowed: try the next, or keep what we have (the shares follow the limit in force)
    return fd_limit()


def fd_limit() -> int:
    """This process' soft RLIMIT_NOFILE, the budget every socket comes out of."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED_FDS if soft == resource.RLIM_INFINITY else soft


def streams_share(fds: int) -> int:
    """Default concurrent streams per peer: three fifths of the fd budget (each stream holds an app socket).

    One busy client is legitimate (a gateway pod holding 10,000 connections to one service, as the benchmark
    does, with this VM's 20,000 fds): a fifth refused it. Three fifths still leave the rest of the node to
    everyone else, which is what the limit is for."""
    return max(1, fds * 3 // 5)


def connections_share(fds: int) -> int:
    """Default connections per peer: a twentieth of the fd budget. With `streams_share`, a peer at both
    limits holds at most 65% of the node's fds, so one peer alone never exhausts them, while one ordinary
    client (a connection per destination pod, a stream per call) stays far below."""
    return max(1, fds // 20)


@dataclass(frozen=True, slots=True)
class HboneLimits:
    """What the HBONE server allows each connection and each peer; all configurable from the command line."""

    max_streams_per_connection: int = STREAMS_PER_CONNECTION
    """Advertised as SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond it are refused (REFUSED_STREAM)."""
    max_connections_per_peer: int = field(default_factory=lambda: connections_share(fd_limit()))
    """HBONE connections open at once from one source identity, and from one source IP."""
    max_streams_per_peer: int = field(default_factory=lambda: streams_share(fd_limit()))
    """Streams open at once from one source identity, and from one source IP, over all its connections."""
    preface_timeout: float = PREFACE_TIMEOUT
    """Seconds after the TLS handshake within which the client's HTTP/2 preface and SETTINGS must arrive."""
    idle_timeout: float = IDLE_TIMEOUT
    """Seconds without a stream after which an inbound connection is closed with GOAWAY."""
    h2_settings: H2Settings = field(init=False, repr=False, compare=False)
    """The server's HTTP/2 settings, built once and shared by every inbound connection."""

    def __post_init__(self) -> None:
        for name in ("max_streams_per_connection", "max_connections_per_peer", "max_streams_per_peer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("preface_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {getattr(self, name)}")
        object.__setattr__(self, "h2_settings", H2Settings(max_concurrent_streams=self.max_streams_per_connection))


class PeerLoad:
    """Connections and streams currently open per source identity and per source IP. Entries at zero are
    dropped, so the maps hold only peers with something open."""

    def __init__(self) -> None:
        self.connections = _Counts()
        self.streams = _Counts()

    def admit_connection(self, identity: str, ip: str, limit: int) -> str | None:
        """Count a new connection, or name the peer that is at `limit` (then nothing is counted)."""
        return self.connections.admit(identity, ip, limit)

    def release_connection(self, identity: str, ip: str) -> None:
        self.connections.release(identity, ip)

    def admit_stream(self, identity: str, ip: str, limit: int) -> str | None:
        """Count a new stream, or name the peer that is at `limit` (then nothing is counted)."""
        return self.streams.admit(identity, ip, limit)

    def release_stream(self, identity: str, ip: str) -> None:
        self.streams.release(identity, ip)


class _Counts:
    """One count by source identity and by source IP; both must be under the limit to admit."""

    def __init__(self) -> None:
        self.by_identity: dict[str, int] = {}
        self.by_ip: dict[str, int] = {}

    def admit(self, identity: str, ip: str, limit: int) -> str | None:
        if self.by_identity.get(identity, 0) >= limit:
            return f"source identity {identity}"
        if self.by_ip.get(ip, 0) >= limit:
            return f"source IP {ip}"
        self.by_identity[identity] = self.by_identity.get(identity, 0) + 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        return None

    def release(self, identity: str, ip: str) -> None:
        for counts, key in ((self.by_identity, identity), (self.by_ip, ip)):
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)
