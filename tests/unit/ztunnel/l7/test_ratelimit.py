"""Local rate limiting on a fake clock: a burst, then the refill timeline, with Envoy's x-ratelimit-* headers, one
bucket per key as configured, and memory bounded."""

from __future__ import annotations

from meshlet_contracts.traffic import RateLimit
from ztunnel.l7.ratelimit import Decision, RateLimiter, TokenBucket


def test_ten_per_second_with_burst_ten_lets_ten_of_a_hundred_immediate_requests_through() -> None:
    limiter = RateLimiter(RateLimit(10, "second", 10))
    allowed = sum(limiter.check("", "", 0.0).allowed for _ in range(100))
    assert allowed == 10
    assert limiter.limited == 90


def test_the_refill_timeline() -> None:
    bucket = TokenBucket(capacity=5, per_fill=2, interval=1.0, now=100.0)
    assert [bucket.take(100.0).allowed for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(100.999).allowed  # no fill before the interval ends
    assert [bucket.take(101.0).allowed for _ in range(3)] == [True, True, False]  # 2 tokens per fill
    # Three intervals idle: 6 tokens due, capped at the burst of 5.
    assert sum(bucket.take(104.5).allowed for _ in range(10)) == 5


def test_headers_are_envoys() -> None:
    bucket = TokenBucket(capacity=3, per_fill=3, interval=60.0, now=0.0)
    first = bucket.take(0.0)
    assert first == Decision(True, 3, 2, 60)
    assert first.headers() == [("x-ratelimit-limit", "3"), ("x-ratelimit-remaining", "2"), ("x-ratelimit-reset", "60")]
    bucket.take(10.2)
    bucket.take(10.2)
    refused = bucket.take(10.2)
    assert refused == Decision(False, 3, 0, 50)  # 49.8 s to the next fill, rounded up
    assert bucket.take(59.9).reset == 1


def test_a_full_bucket_reports_no_reset() -> None:
    bucket = TokenBucket(capacity=1, per_fill=1, interval=1.0, now=0.0)
    bucket.take(0.0)
    bucket.refill(1.0)
    assert bucket.reset_after(1.0) == 0


def test_a_minute_unit_refills_per_minute() -> None:
    limiter = RateLimiter(RateLimit(2, "minute"))
    assert [limiter.check("", "", t).allowed for t in (0.0, 1.0, 2.0, 59.0, 60.0)] == [True, True, False, False, True]


def test_per_source_identity_gives_each_caller_its_own_bucket() -> None:
    limiter = RateLimiter(RateLimit(1, per_source_identity=True))
    assert limiter.check("", "spiffe://td/ns/a/sa/x", 0.0).allowed
    assert not limiter.check("", "spiffe://td/ns/a/sa/x", 0.0).allowed
    assert limiter.check("", "spiffe://td/ns/a/sa/y", 0.0).allowed


def test_without_per_source_identity_callers_share_a_bucket() -> None:
    limiter = RateLimiter(RateLimit(1))
    assert limiter.check("", "x", 0.0).allowed
    assert not limiter.check("", "y", 0.0).allowed


def test_a_route_scoped_limit_applies_to_that_route_only() -> None:
    limiter = RateLimiter(RateLimit(1, route="shop/canary"))
    assert limiter.applies_to("shop/canary")
    assert not limiter.applies_to("shop/other")
    assert RateLimiter(RateLimit(1)).applies_to("anything")


def test_refilled_buckets_are_swept_and_a_new_one_is_the_same() -> None:
    limiter = RateLimiter(RateLimit(1, per_source_identity=True))
    for i in range(50):
        limiter.check("", f"caller-{i}", 0.0)
    assert len(limiter) == 50
    assert limiter.sweep(0.5) == 0  # all still drained
    assert limiter.sweep(1.0) == 50
    assert limiter.check("", "caller-0", 1.0).allowed


def test_memory_is_bounded_by_max_keys() -> None:
    limiter = RateLimiter(RateLimit(1, "hour", per_source_identity=True), max_keys=100)
    for i in range(1000):
        assert limiter.check("", f"caller-{i}", float(i)).allowed
        assert len(limiter) <= 100
    assert limiter.evicted == 900


def test_room_is_made_from_refilled_buckets_before_evicting_drained_ones() -> None:
    limiter = RateLimiter(RateLimit(1, "second", per_source_identity=True), max_keys=10)
    for i in range(10):
        limiter.check("", f"old-{i}", 0.0)
    for i in range(10):
        limiter.check("", f"new-{i}", 5.0)  # the old buckets are full again by now
    assert limiter.evicted == 0 and len(limiter) == 10
