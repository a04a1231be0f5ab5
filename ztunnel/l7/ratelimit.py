"""Local rate limiting: token buckets per key, as Envoy's local rate limit filter keeps them. Pure, no I/O.

A TrafficPolicy's `rateLimit` becomes Envoy's token bucket: `max_tokens` = burst, `tokens_per_fill` =
requestsPerUnit, `fill_interval` = the unit. A bucket starts full; each request takes a token or is refused
(the data path answers 429 with flag RL); every fill interval puts `requestsPerUnit` tokens back, up to the burst.
Fills are counted from the bucket's creation, computed lazily when the bucket is next used, so nothing runs in
the background.

One bucket per key: (route, source identity) when `perSourceIdentity`, else (route, ""), the route being "" for
a policy of the whole Service. Buckets are bounded (`max_keys`, least recently used out): a bucket that has
refilled completely is indistinguishable from a new one, so dropping it loses nothing, and `sweep` drops those;
only past `max_keys` live keys does eviction forget a partly drained bucket (counted in `evicted`).

Each decision carries the headers Envoy's filter adds with `enable_x_ratelimit_headers: DRAFT_VERSION_03`:
`x-ratelimit-limit` (the bucket's size), `x-ratelimit-remaining` (tokens left after this request) and
`x-ratelimit-reset` (whole seconds until the next fill).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from meshlet_contracts.traffic import UNIT_SECONDS, RateLimit

MAX_KEYS = 10_000
SWEEP_EVERY = 1024
"""Checks between two sweeps of refilled buckets: amortized O(1) per request."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int
    """Whole seconds until the next fill (at least 1 while tokens are missing, 0 when the bucket is full)."""

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(self.reset)),
        ]


class TokenBucket:
    """`capacity` tokens, `per_fill` more every `interval` seconds (never above capacity); starts full at `now`."""

    def __init__(self, capacity: int, per_fill: int, interval: float, now: float) -> None:
        self.capacity = capacity
        self.per_fill = per_fill
        self.interval = interval
        self.tokens = capacity
        self._epoch = now
        self._fills = 0
        """Fills applied so far, counted from `_epoch`."""

    def refill(self, now: float) -> None:
        due = int((now - self._epoch) // self.interval)
        if due > self._fills:
            self.tokens = min(self.capacity, self.tokens + (due - self._fills) * self.per_fill)
            self._fills = due

    def full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.capacity

    def take(self, now: float) -> Decision:
        self.refill(now)
        allowed = self.tokens > 0
        if allowed:
            self.tokens -= 1
        return Decision(allowed, self.capacity, self.tokens, self.reset_after(now))

    def reset_after(self, now: float) -> int:
        if self.tokens >= self.capacity:
            return 0
        next_fill = self._epoch + (self._fills + 1) * self.interval
        return max(1, math.ceil(next_fill - now))


class RateLimiter:
    """The buckets of one TrafficPolicy's `rateLimit`."""

    def __init__(self, rule: RateLimit, max_keys: int = MAX_KEYS) -> None:
        self.rule = rule
        self.max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._checks = 0
        self.limited = 0
        """Requests refused (a metric)."""
        self.evicted = 0
        """Partly drained buckets forgotten for lack of room (a metric)."""

    def applies_to(self, route: str) -> bool:
        """Whether requests on `route` (the HTTPRoute's `namespace/name` or name; "" for none) are limited."""
        return not self.rule.route or self.rule.route == route

    def check(self, route: str, source: str, now: float) -> Decision:
        """Take a token for a request on `route` from `source` (its SPIFFE identity; "" when unknown)."""
        key = (route if self.rule.route else "", source if self.rule.per_source_identity else "")
        self._checks += 1
        if self._checks % SWEEP_EVERY == 0:
            self.sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._make_room(now)
            interval = UNIT_SECONDS[self.rule.unit]
            bucket = self._buckets[key] = TokenBucket(self.rule.capacity, self.rule.requests_per_unit, interval, now)
        else:
            self._buckets.move_to_end(key)
        decision = bucket.take(now)
        if not decision.allowed:
            self.limited += 1
        return decision

    def sweep(self, now: float) -> int:
        """Drop the buckets that are full again (a new one would be the same); returns how many went."""
        full = [key for key, bucket in self._buckets.items() if bucket.full(now)]
        for key in full:
            del self._buckets[key]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)

    def _make_room(self, now: float) -> None:
        if self.sweep(now) == 0:
            self._buckets.popitem(last=False)
            self.evicted += 1
