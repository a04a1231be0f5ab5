"""TrafficPolicy contract: what control sends reads back identical, defaults are filled in, durations read as Istio
writes them, and a bad item names the policy and the field."""

from __future__ import annotations

import json
from typing import Any, get_type_hints

import pytest

from meshlet_contracts.config_items import ItemError, TrafficPolicyItem
from meshlet_contracts.spec_checks import format_duration, parse_duration
from meshlet_contracts.traffic import (
    ConnectionPool,
    ConsistentHash,
    HttpCookie,
    LoadBalancer,
    OutlierDetection,
    RateLimit,
    TargetRef,
    TrafficPolicy,
    TrafficPolicyError,
    parse_spec,
)

FULL = TrafficPolicy(
    "web",
    "shop",
    TargetRef("web", 8080),
    LoadBalancer(consistent_hash=ConsistentHash(http_cookie=HttpCookie("session", "/", 3600.0), maglev=True)),
    ConnectionPool(max_connections=1, http1_max_pending_requests=1, max_requests_per_connection=100, max_retries=3),
    OutlierDetection(3, 2, 0.5, 15.0, 50),
    RateLimit(10, "minute", 20, per_source_identity=True, route="shop/web-route"),
    "2026-11-28T10:00:00Z",
)


def roundtrip(policy: TrafficPolicy) -> TrafficPolicy:
    return TrafficPolicy.from_wire(json.loads(json.dumps(policy.to_wire())))


@pytest.mark.parametrize(
    "policy",
    [
        FULL,
        TrafficPolicy("a", "ns", TargetRef("svc")),
        TrafficPolicy("a", "ns", TargetRef("svc"), LoadBalancer(simple="LEAST_REQUEST")),
        TrafficPolicy("a", "ns", TargetRef("svc"), LoadBalancer(consistent_hash=ConsistentHash(use_source_ip=True))),
        TrafficPolicy(
            "a",
            "ns",
            TargetRef("svc"),
            LoadBalancer(consistent_hash=ConsistentHash(http_header_name="x-user", minimum_ring_size=4096)),
            ConnectionPool(),
            OutlierDetection(),
            RateLimit(5, burst=5),
        ),
    ],
)
def test_a_policy_reads_back_identical_from_the_wire(policy: TrafficPolicy) -> None:
    assert roundtrip(policy) == policy


def test_the_wire_item_has_exactly_the_defined_keys() -> None:
    assert set(FULL.to_wire()) == set(get_type_hints(TrafficPolicyItem))


def test_absent_settings_take_istios_defaults() -> None:
    policy = parse_spec(
        "p", "ns", {"targetRef": {"name": "web"}, "outlierDetection": {}, "rateLimit": {"requestsPerUnit": 7}}
    )
    assert policy.outlier_detection == OutlierDetection(5, 0, 10.0, 30.0, 10)
    assert policy.rate_limit == RateLimit(7, "second", 7)
    assert policy.load_balancer is None and policy.connection_pool is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m", 60.0), ("500ms", 0.5), ("1h30m", 5400.0), ("1.5s", 1.5), ("2000us", 0.002)],
)
def test_durations_read_as_istio_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text, "f") == seconds
    assert parse_duration(format_duration(seconds), "f") == seconds


@pytest.mark.parametrize(
    ("seconds", "text"), [(30.0, "30s"), (0.5, "500ms"), (60.0, "1m"), (3600.0, "1h"), (90.0, "90s"), (1.25, "1250ms")]
)
def test_durations_are_written_canonically(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10x", "'10x' is not a duration"),
        ("10", "'10' is not a duration"),
        ("s", "'s' is not a duration"),
        ("", "'' is not a duration"),
        ("1.5ms", "whole milliseconds"),
        ("0s", "at least 1ms"),
    ],
)
def test_a_bad_duration_is_refused_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ItemError, match=reason):
        parse_duration(text, "interval")


def wire_error(change: dict[str, Any]) -> str:
    item: dict[str, Any] = {**FULL.to_wire(), **change}
    with pytest.raises(TrafficPolicyError) as info:
        TrafficPolicy.from_wire(item)
    return str(info.value)


def test_an_unknown_wire_field_is_refused_naming_policy_and_field() -> None:
    assert (
        wire_error({"rateLimits": 3}) == "TrafficPolicy shop/web: rateLimits: unknown field; did you mean 'rateLimit'?"
    )


def test_a_bad_nested_wire_value_names_its_path() -> None:
    outlier = {**FULL.to_wire()["outlierDetection"], "baseEjectionTime": "10x"}  # type: ignore[dict-item]
    assert wire_error({"outlierDetection": outlier}).startswith(
        "TrafficPolicy shop/web: outlierDetection.baseEjectionTime: '10x' is not a duration"
    )


def test_a_wire_item_without_a_name_is_refused() -> None:
    with pytest.raises(TrafficPolicyError, match="name: required"):
        TrafficPolicy.from_wire({"namespace": "shop", "targetRef": {"name": "web"}})


def test_precedence_puts_the_oldest_first_and_unknown_times_last() -> None:
    old = TrafficPolicy("z", "ns", TargetRef("s"), created="2026-01-01T00:00:00Z")
    new = TrafficPolicy("a", "ns", TargetRef("s"), created="2026-06-01T00:00:00Z")
    unknown = TrafficPolicy("0", "ns", TargetRef("s"))
    assert sorted([unknown, new, old], key=TrafficPolicy.precedence) == [old, new, unknown]


def test_rate_limit_rate_is_per_second() -> None:
    assert RateLimit(120, "minute").rate == 2.0
    assert RateLimit(120, "minute").capacity == 120
