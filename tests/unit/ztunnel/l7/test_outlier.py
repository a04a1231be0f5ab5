"""Outlier detection on a fake clock: an endpoint failing in a row is ejected for baseEjectionTime, longer each time
it is ejected again, comes back on time, and the ejection cap keeps enough endpoints in service."""

from __future__ import annotations

from meshlet_contracts.traffic import OutlierDetection
from ztunnel.l7.outlier import CONNECT_FAILURE, OutlierDetector

EPS = ["a", "b", "c"]


def detector(**overrides: int | float) -> OutlierDetector:
    settings = {
        "consecutive_5xx_errors": 3,
        "consecutive_gateway_errors": 0,
        "interval": 10.0,
        "base_ejection_time": 30.0,
        "max_ejection_percent": 100,
    }
    settings.update(overrides)
    return OutlierDetector(OutlierDetection(**settings))  # type: ignore[arg-type]


def fail(d: OutlierDetector, endpoint: str, times: int, now: float, status: int | None = 503) -> list[bool]:
    return [d.record(endpoint, status, now, EPS) for _ in range(times)]


def test_consecutive_5xx_eject_on_the_threshold_and_not_before() -> None:
    d = detector()
    assert fail(d, "a", 3, now=0.0) == [False, False, True]
    assert d.healthy(EPS, 0.0) == ["b", "c"]
    assert d.ejections_total == 1


def test_a_success_resets_the_count() -> None:
    d = detector()
    fail(d, "a", 2, now=0.0)
    d.record("a", 200, 0.0, EPS)
    assert fail(d, "a", 2, now=0.0) == [False, False]
    assert d.healthy(EPS, 0.0) == EPS


def test_4xx_is_a_success_for_outlier_detection() -> None:
    d = detector(consecutive_5xx_errors=2)
    for status in (503, 404, 503):
        d.record("a", status, 0.0, EPS)
    assert not d.is_ejected("a", 0.0)


def test_ejection_lasts_base_ejection_time_then_the_endpoint_comes_back() -> None:
    d = detector()
    fail(d, "a", 3, now=100.0)
    assert d.ejected_until("a", 100.0) == 130.0
    assert d.is_ejected("a", 129.999)
    assert not d.is_ejected("a", 130.0)
    assert d.healthy(EPS, 130.0) == EPS


def test_each_new_ejection_lasts_longer_and_recovery_forgives_it() -> None:
    d = detector()
    fail(d, "a", 3, now=0.0)  # 1st: 30 s
    fail(d, "a", 3, now=30.0)  # back at 30, fails at once: 2nd, 60 s
    assert d.ejected_until("a", 30.0) == 90.0
    fail(d, "a", 3, now=90.0)  # 3rd: 90 s
    assert d.ejected_until("a", 90.0) == 180.0
    # Healthy for 25 s (two intervals) after coming back at 180: two ejections forgiven, the next is the 2nd.
    fail(d, "a", 3, now=205.0)
    assert d.ejected_until("a", 205.0) == 205.0 + 60.0


def test_the_backoff_is_capped_at_five_minutes() -> None:
    d = detector(base_ejection_time=100.0)
    now = 0.0
    lengths = []
    for _ in range(5):
        fail(d, "a", 3, now)  # fails again the moment it is back
        until = d.ejected_until("a", now)
        assert until is not None
        lengths.append(until - now)
        now = until
    assert lengths == [100.0, 200.0, 300.0, 300.0, 300.0]


def test_gateway_errors_count_502_503_504_and_connect_failures_only() -> None:
    d = detector(consecutive_5xx_errors=0, consecutive_gateway_errors=2)
    d.record("a", 500, 0.0, EPS)
    d.record("a", 500, 0.0, EPS)
    assert not d.is_ejected("a", 0.0)  # 500 is not a gateway error, and 5xx ejection is off
    assert d.record("b", CONNECT_FAILURE, 0.0, EPS) is False
    assert d.record("b", 504, 0.0, EPS) is True
    assert d.healthy(EPS, 0.0) == ["a", "c"]


def test_connect_failures_count_as_5xx_too() -> None:
    d = detector(consecutive_5xx_errors=2)
    assert fail(d, "a", 2, 0.0, CONNECT_FAILURE) == [False, True]


def test_the_cap_ejects_while_the_ejected_share_is_below_it() -> None:
    d = detector(max_ejection_percent=10)
    eps = [f"e{i}" for i in range(20)]
    ejected = [e for e in eps if any(d.record(e, 503, 0.0, eps) for _ in range(3))]
    # 0% and 5% are below 10%: two go; at 10% the rest stay, counted as overflow.
    assert len(ejected) == 2
    assert d.ejections_overflow == 18
    assert len(d.healthy(eps, 0.0)) == 18


def test_the_default_cap_still_ejects_one_of_three_as_envoy_does() -> None:
    d = detector(max_ejection_percent=10)
    for e in EPS:
        fail(d, e, 3, 0.0)
    assert d.healthy(EPS, 0.0) == ["b", "c"]


def test_below_100_percent_the_last_healthy_endpoint_stays() -> None:
    d = detector(max_ejection_percent=99)
    for e in EPS:
        fail(d, e, 3, 0.0)
    assert d.healthy(EPS, 0.0) == ["c"]


def test_at_100_percent_every_endpoint_may_go() -> None:
    d = detector(max_ejection_percent=100)
    for e in EPS:
        fail(d, e, 3, 0.0)
    assert d.healthy(EPS, 0.0) == []
    assert d.healthy(EPS, 30.0) == EPS


def test_a_zero_threshold_never_ejects() -> None:
    d = detector(consecutive_5xx_errors=0)
    assert not any(fail(d, "a", 50, 0.0))


def test_forget_drops_endpoints_that_left() -> None:
    d = detector()
    fail(d, "a", 3, 0.0)
    d.record("b", 200, 0.0, EPS)
    d.forget(["b"])
    assert set(d._hosts) == {"b"}
    assert not d.is_ejected("a", 0.0)
