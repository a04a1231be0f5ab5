"""Outlier detection: stop sending to an endpoint that keeps failing, for a while, as Envoy does. Pure, no I/O.

Per endpoint of one Service, following a TrafficPolicy's `outlierDetection`:
- Two counters of consecutive failures: any 5xx (and a failure to connect or a reset, which a client sees as a
  502/503) counts towards `consecutive5xxErrors`; 502, 503, 504 and connect failures count towards
  `consecutiveGatewayErrors`. Any other answer resets both. A threshold of 0 disables that kind.
- Reaching a threshold ejects the endpoint for `baseEjectionTime` x the number of times it has been ejected
  (backoff, capped at `MAX_EJECTION_TIME` or the base time if that is longer); each `interval` it then stays
  un-ejected without being ejected again takes one off that number, so an endpoint that recovered for good
  starts afresh.
- `maxEjectionPercent` caps ejections as Envoy does: an endpoint is ejected only while the share already
  ejected is below it (so 10% of three endpoints still ejects one), and below 100% never the last healthy one.
- Ejection ends on time, checked whenever asked (`healthy`, `record`): there is no timer to run.

Times are seconds from any monotonic clock (the caller passes `now`), so tests drive it with a fake one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshlet_contracts.traffic import OutlierDetection

MAX_EJECTION_TIME = 300.0
"""Envoy's default `max_ejection_time`: the backoff never ejects for longer (unless the base time is longer)."""
GATEWAY_STATUSES = frozenset({502, 503, 504})
CONNECT_FAILURE: None = None
"""What `record` takes for a request that got no answer: connect failure, reset, upstream timeout."""


@dataclass(slots=True)
class _Host:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejections: int = 0
    """The backoff multiplier: times ejected, less one per `interval` spent healthy since."""
    ejected_until: float | None = None
    healthy_since: float = 0.0


class OutlierDetector:
    """The ejection state of one Service's endpoints (named by strings, as the balancer names them)."""

    def __init__(self, settings: OutlierDetection) -> None:
        self.settings = settings
        self._hosts: dict[str, _Host] = {}
        self.ejections_total = 0
        """Ejections so far (a metric)."""
        self.ejections_overflow = 0
        """Ejections `maxEjectionPercent` prevented (a metric, as Envoy's `ejections_overflow`)."""

    def record(self, endpoint: str, status: int | None, now: float, endpoints: Sequence[str] = ()) -> bool:
        """Count one outcome for `endpoint`: an HTTP status, or None when no answer came (CONNECT_FAILURE).
        `endpoints` is the Service's current endpoint set, for the ejection cap (empty: just this one known).
        Returns whether this outcome ejected the endpoint."""
        host = self._hosts.setdefault(endpoint, _Host(healthy_since=now))
        self._expire(host, now)
        if status is not None and status < 500:
            host.consecutive_5xx = host.consecutive_gateway = 0
            return False
        host.consecutive_5xx += 1
        if status is None or status in GATEWAY_STATUSES:
            host.consecutive_gateway += 1
        five, gateway = self.settings.consecutive_5xx_errors, self.settings.consecutive_gateway_errors
        tripped = (five > 0 and host.consecutive_5xx >= five) or (gateway > 0 and host.consecutive_gateway >= gateway)
        if not tripped or host.ejected_until is not None:
            return False
        host.consecutive_5xx = host.consecutive_gateway = 0  # as Envoy: counting starts over either way
        if not self._may_eject(endpoint, endpoints or (endpoint,), now):
            self.ejections_overflow += 1
            return False
        # Forgive one ejection per interval spent healthy, then back off from what remains.
        forgiven = int((now - host.healthy_since) // self.settings.interval)
        host.ejections = max(0, host.ejections - forgiven) + 1
        base = self.settings.base_ejection_time
        host.ejected_until = now + min(base * host.ejections, max(base, MAX_EJECTION_TIME))
        self.ejections_total += 1
        return True

    def is_ejected(self, endpoint: str, now: float) -> bool:
        host = self._hosts.get(endpoint)
        if host is None:
            return False
        self._expire(host, now)
        return host.ejected_until is not None

    def healthy(self, endpoints: Sequence[str], now: float) -> list[str]:
        """The endpoints not ejected at `now`, in the order given."""
        return [e for e in endpoints if not self.is_ejected(e, now)]

    def ejected_until(self, endpoint: str, now: float) -> float | None:
        """When the ejection of `endpoint` ends, or None when it is not ejected."""
        return self._hosts[endpoint].ejected_until if self.is_ejected(endpoint, now) else None

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the state of endpoints not in `keep` (those that left the Service), so memory follows the set."""
        kept = set(keep)
        for endpoint in [e for e in self._hosts if e not in kept]:
            del self._hosts[endpoint]

    def _expire(self, host: _Host, now: float) -> None:
        if host.ejected_until is not None and now >= host.ejected_until:
            # Healthy again from the moment the ejection ended, not from whenever someone asked.
            host.healthy_since = host.ejected_until
            host.ejected_until = None

    def _may_eject(self, endpoint: str, endpoints: Sequence[str], now: float) -> bool:
        members = set(endpoints) | {endpoint}
        ejected = sum(1 for e in members if self.is_ejected(e, now))
        percent = self.settings.max_ejection_percent
        if percent >= 100:
            return True
        # Never the last healthy endpoint: some service beats none, and Envoy would panic-route to all anyway.
        return ejected * 100 < percent * len(members) and ejected + 1 < len(members)
