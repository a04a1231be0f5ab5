"""Circuit breaking: a TrafficPolicy's `connectionPool` as Envoy's per-cluster counters. Pure, no I/O.

One `ClusterLimits` per upstream cluster (the target Service, on this node proxy):
- `maxConnections`: connections open to all its endpoints together. A request that finds no idle connection and
  cannot open one waits in the pending queue.
- `http1MaxPendingRequests`: how many may wait; one more overflows: the data path answers 503 with flag UO.
  A waiter is handed the next connection slot that frees up, first come first served.
- `maxRequestsPerConnection`: a connection that has carried that many requests is closed instead of reused.
- `maxRetries`: retries in flight at once across the cluster; a retry over it is not made (the attempt's own
  answer stands, flag URX as for an exhausted retry budget).

The data path owns the waiting (a future per waiter, say): this module only counts and decides, and hands back
the waiter whose turn it is. Every refusal is counted by kind for the metrics, as Envoy's `upstream_cx_overflow`,
`upstream_rq_pending_overflow` and `upstream_rq_retry_overflow`.
"""

from __future__ import annotations

from collections import Counter, deque
from enum import Enum
from typing import Generic, TypeVar

from meshlet_contracts.traffic import ConnectionPool

W = TypeVar("W")

OVERFLOW_FLAG = "UO"


class Admission(Enum):
    CONNECT = "connect"
    """A connection slot is the caller's: open a connection (call `connection_closed` when it ends)."""
    QUEUED = "queued"
    """Wait: `connection_closed` hands the slot to this waiter in turn (or `cancel` it)."""
    OVERFLOW = "overflow"
    """Refused: answer 503, response flag UO."""


class ClusterLimits(Generic[W]):
    """The connection-pool counters of one upstream cluster; None in a limit means unlimited."""

    def __init__(self, pool: ConnectionPool | None) -> None:
        self.pool = pool or ConnectionPool()
        self.connections = 0
        self.retries = 0
        self._pending: deque[W] = deque()
        self.overflows: Counter[str] = Counter()
        """Refusals by kind: `connections` (no slot and no queue), `pending` (queue full), `retries`."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def request_connection(self, waiter: W) -> Admission:
        """A request needs a new connection (none idle to reuse): open one, wait for a slot, or overflow."""
        limit = self.pool.max_connections
        if limit is None or self.connections < limit:
            self.connections += 1
            return Admission.CONNECT
        max_pending = self.pool.http1_max_pending_requests
        if max_pending is not None and len(self._pending) >= max_pending:
            self.overflows["pending" if max_pending else "connections"] += 1
            return Admission.OVERFLOW
        self._pending.append(waiter)
        return Admission.QUEUED

    def try_connection(self) -> bool:
        """A connection that cannot wait (a TCP connection at L4: a client's connect cannot be held in a queue):
        a slot now (call `connection_closed` when it ends), or False, counted as a `connections` overflow."""
        limit = self.pool.max_connections
        if limit is None or self.connections < limit:
            self.connections += 1
            return True
        self.overflows["connections"] += 1
        return False

    def connection_closed(self) -> W | None:
        """A connection of this cluster ended: its slot goes to the first waiter (returned: it may now connect,
        and owns the slot) or is freed (None)."""
        limit = self.pool.max_connections
        # The slot passes on (the count stays), unless a lowered limit wants it gone.
        if self._pending and (limit is None or self.connections <= limit):
            return self._pending.popleft()
        self.connections = max(0, self.connections - 1)
        return None

    def cancel(self, waiter: W) -> bool:
        """A waiter gave up (its client left, its timeout fired); False when it was not waiting (any more)."""
        try:
            self._pending.remove(waiter)
        except ValueError:
            return False
        return True

    def reusable(self, requests_done: int) -> bool:
        """Whether a connection that has carried `requests_done` requests may carry another."""
        limit = self.pool.max_requests_per_connection
        return limit is None or requests_done < limit

    def begin_retry(self) -> bool:
        """Whether one more retry may start now; if so, call `end_retry` when it has its answer."""
        limit = self.pool.max_retries
        if limit is not None and self.retries >= limit:
            self.overflows["retries"] += 1
            return False
        self.retries += 1
        return True

    def end_retry(self) -> None:
        self.retries = max(0, self.retries - 1)

    def update(self, pool: ConnectionPool | None) -> list[W]:
        """A new policy version: limits apply from the next decision, open connections stay. Returns the waiters
        a raised `maxConnections` admits now (each owns a slot, as from `connection_closed`)."""
        self.pool = pool or ConnectionPool()
        admitted: list[W] = []
        limit = self.pool.max_connections
        while self._pending and (limit is None or self.connections < limit):
            admitted.append(self._pending.popleft())
            self.connections += 1
        return admitted
