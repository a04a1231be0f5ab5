"""The node's fixed ports, socket marks and routing table, as ztunnel, the agent's backends and bpf/meshlet.h use them.

Istio reserves 15000-15090 for its proxies; meshlet's pods keep to the same numbers, so a user's app
never listens on one of them and ztunnel refuses them as destinations (a connection to its own listener
would loop back into it without end).
"""

from __future__ import annotations

OUTBOUND = 15001
"""In every enrolled pod's netns: the app's captured outgoing connections."""
INBOUND_PLAINTEXT = 15006
"""In every enrolled pod's netns: captured plaintext arriving from outside the mesh."""
HBONE = 15008
"""In every enrolled pod's netns: mTLS HTTP/2 CONNECT tunnels from other ztunnels."""
ADMIN = 15000
"""ztunnel's admin (node netns, localhost)."""
METRICS = 15020
"""ztunnel's Prometheus metrics (node netns)."""
READINESS = 15021
"""ztunnel's readiness (node netns)."""

PROXY_PORTS = frozenset({OUTBOUND, INBOUND_PLAINTEXT, HBONE})
"""ztunnel's in-pod listeners: never a destination it connects to."""
RESERVED_PORTS = PROXY_PORTS | {ADMIN, METRICS, READINESS}
"""Ports an enrolled workload's app must not be reached on through the mesh."""

ZTUNNEL_MARK = 0x539
"""SO_MARK on every socket ztunnel opens in a pod: the backends never capture it again."""
TRANSPARENT_MARK = 0x111
"""Connmark on ztunnel's IP_TRANSPARENT connections to an app, so replies route back to ztunnel."""
REPLY_TABLE = 100
"""Policy-routing table whose `local` default route delivers those replies to ztunnel's socket."""
