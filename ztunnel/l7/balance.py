"""Load balancing: which endpoint of a Service the next request (or TCP connection) goes to. Pure, no I/O.

Endpoints are named by strings (`ip:port`, say): the data path maps the pick back to its upstream. The
algorithms are Envoy's, as a TrafficPolicy's `loadBalancer` names them:
- ROUND_ROBIN: each in turn.
- RANDOM: uniformly at random.
- LEAST_REQUEST: "power of two choices": two distinct endpoints drawn at random, the one with fewer requests in
  flight wins. Nearly as good as scanning all of them, and never herds every client onto the one idle endpoint.
- consistent hash (`RingHash`, `Maglev`): a key (a header, a cookie, the source IP) maps to the same endpoint
  for as long as that endpoint stays, and when one of N endpoints goes only about 1/N of the keys move.

Hashes are 64-bit BLAKE2b (stdlib, fast enough in C, and stable across processes, unlike `hash()`): every
proxy, and every restart of one, maps a key to the same endpoint. Building a table costs O(table size) in Python
(~0.1 s for a 65537-entry Maglev table), so `Balancer` builds one per endpoint set and keeps it until the set
changes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence

from meshlet_contracts.traffic import DEFAULT_MAGLEV_SIZE, LoadBalancer

MAX_TABLES = 4
"""Hash tables kept per balancer, for the endpoint sets seen last."""


def hash64(data: str | bytes, salt: bytes = b"") -> int:
    """A stable 64-bit hash of `data`."""
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8, salt=salt).digest(), "big")


class RoundRobin:
    def __init__(self) -> None:
        self._next = itertools.count()

    def pick(self, endpoints: Sequence[str]) -> str:
        return endpoints[next(self._next) % len(endpoints)]


class RandomChoice:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, endpoints: Sequence[str]) -> str:
        return self._rng.choice(endpoints)


class LeastRequest:
    """Power of two choices over requests in flight, which the data path reports with `begin` and `end`."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._active: Counter[str] = Counter()

    def begin(self, endpoint: str) -> None:
        self._active[endpoint] += 1

    def end(self, endpoint: str) -> None:
        self._active[endpoint] -= 1
        if self._active[endpoint] <= 0:
            del self._active[endpoint]  # so that endpoints that went leave nothing behind

    def active(self, endpoint: str) -> int:
        return self._active.get(endpoint, 0)

    def pick(self, endpoints: Sequence[str]) -> str:
        if len(endpoints) == 1:
            return endpoints[0]
        first, second = self._rng.sample(range(len(endpoints)), 2)
        a, b = endpoints[first], endpoints[second]
        return b if self.active(b) < self.active(a) else a


class RingHash:
    """Each endpoint at `replicas` points of a 64-bit ring; a key goes to the first point at or after its hash.
    Removing an endpoint moves exactly the keys it held, spread over the others, provided the other endpoints keep
    their points: so `replicas` must not change with the endpoint set (`Balancer` keeps it stable)."""

    def __init__(self, endpoints: Sequence[str], replicas: int) -> None:
        if not endpoints:
            raise ValueError("a hash ring needs at least one endpoint")
        self.replicas = replicas
        points = sorted((hash64(f"{endpoint}_{i}"), endpoint) for endpoint in endpoints for i in range(replicas))
        self._hashes = [h for h, _ in points]
        self._owners = [e for _, e in points]

    def __len__(self) -> int:
        return len(self._hashes)

    def pick(self, key: int) -> str:
        i = bisect.bisect_left(self._hashes, key)
        return self._owners[i if i < len(self._owners) else 0]


class Maglev:
    """Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size M filled by letting each endpoint
    in turn claim the next free slot of its own permutation of 0..M-1; every endpoint gets M/N slots (within one),
    and removing one reassigns mostly its own slots. A lookup is one index: `table[key % M]`."""

    def __init__(self, endpoints: Sequence[str], table_size: int = DEFAULT_MAGLEV_SIZE) -> None:
        if not endpoints:
            raise ValueError("a Maglev table needs at least one endpoint")
        size = table_size
        names = sorted(set(endpoints))  # the table depends on the set, never on the order it was given in
        offsets = [hash64(name, b"offset") % size for name in names]
        skips = [hash64(name, b"skip") % (size - 1) + 1 for name in names]
        nexts = [0] * len(names)
        table = [-1] * size
        filled = 0
        while True:
            for i in range(len(names)):
                # The next slot of endpoint i's permutation that nobody holds yet.
                slot = (offsets[i] + nexts[i] * skips[i]) % size
                while table[slot] >= 0:
                    nexts[i] += 1
                    slot = (offsets[i] + nexts[i] * skips[i]) % size
                table[slot] = i
                nexts[i] += 1
                filled += 1
                if filled == size:
                    self._table = [names[i] for i in table]
                    return

    def __len__(self) -> int:
        return len(self._table)

    def pick(self, key: int) -> str:
        return self._table[key % len(self._table)]


class Balancer:
    """A TrafficPolicy's `loadBalancer` (None: ROUND_ROBIN) for one Service: `pick` the endpoint for a request.

    `hash_key` is the consistent-hash input the data path extracted (header value, cookie, source IP); when it is
    None for a consistent-hash policy (the header is missing, say) the pick is random, as Envoy does."""

    def __init__(self, policy: LoadBalancer | None, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.least_request = LeastRequest(self._rng)
        self._round_robin = RoundRobin()
        self._random = RandomChoice(self._rng)
        self._tables: dict[tuple[str, ...], RingHash | Maglev] = {}
        """Tables by endpoint set, the last few kept: an endpoint ejected and back must not cost two rebuilds."""
        self._replicas: int | None = None

    def pick(self, endpoints: Sequence[str], hash_key: str | bytes | None = None) -> str:
        if not endpoints:
            raise ValueError("no endpoint to pick from")
        hashed = self.policy.consistent_hash if self.policy is not None else None
        if hashed is not None:
            if hash_key is None:
                return self._random.pick(endpoints)
            return self._hash_table(endpoints).pick(hash64(hash_key))
        simple = self.policy.simple if self.policy is not None else None
        if simple == "LEAST_REQUEST":
            return self.least_request.pick(endpoints)
        if simple == "RANDOM":
            return self._random.pick(endpoints)
        return self._round_robin.pick(endpoints)

    @property
    def hashing(self) -> bool:
        return self.policy is not None and self.policy.consistent_hash is not None

    def _hash_table(self, endpoints: Sequence[str]) -> RingHash | Maglev:
        members = tuple(sorted(set(endpoints)))
        table = self._tables.get(members)
        if table is None:
            hashed = self.policy.consistent_hash if self.policy is not None else None
            assert hashed is not None
            if hashed.maglev:
                table = Maglev(members, hashed.table_size)
            else:
                table = RingHash(members, self._ring_replicas(len(members), hashed.minimum_ring_size))
            if len(self._tables) >= MAX_TABLES:
                del self._tables[next(iter(self._tables))]  # the oldest
            self._tables[members] = table
        return table

    def _ring_replicas(self, count: int, minimum_ring_size: int) -> int:
        """Points per endpoint: enough for `minimum_ring_size` in all, but unchanged while the endpoint count
        stays within a factor of two of what it was, because new points would take keys from every endpoint."""
        wanted = math.ceil(minimum_ring_size / count)
        if self._replicas is None or not wanted / 2 <= self._replicas <= wanted * 2:
            self._replicas = wanted
        return self._replicas
