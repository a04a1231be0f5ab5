"""TrafficPolicy (`networking.meshlet.io/v1`): a raw object checked and converted into the shared proxy-ready type
of `meshlet_contracts.traffic` (which ztunnel reads back from the wire).

The spec's sections are named after Istio's DestinationRule `trafficPolicy`, so its settings carry over; the
checks themselves live in `meshlet_contracts.traffic.parse_spec`, shared with the proxy, and errors here name the
field by its full path: `spec.outlierDetection.baseEjectionTime: '10x' is not a duration (...)`.

Two policies for one target (Service and port) are both accepted; the oldest by creationTimestamp is in force,
as Istio does for DestinationRules, and `conflicts` says which one lost so that the store can report it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from control.model.fields import ObjectKey, ValidationError, opt_map, opt_str, typed_key
from meshlet_contracts import traffic
from meshlet_contracts.config_items import ItemError

API_VERSIONS = ("networking.meshlet.io/v1",)


@dataclass(frozen=True, slots=True)
class TrafficPolicy(traffic.TrafficPolicy):
    """The shared TrafficPolicy as the store holds it: `from_k8s` validates, `key` names it among objects."""

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> TrafficPolicy:
        key = typed_key(obj, "TrafficPolicy", API_VERSIONS)
        created = opt_str(obj, "metadata.creationTimestamp")
        spec = opt_map(obj, "spec")
        try:
            parsed = traffic.parse_spec(key.name, key.namespace, spec, created)
        except ItemError as exc:
            raise ValidationError(exc.reason, f"spec.{exc.field}" if exc.field else "spec") from None
        return cls(
            parsed.name,
            parsed.namespace,
            parsed.target,
            parsed.load_balancer,
            parsed.connection_pool,
            parsed.outlier_detection,
            parsed.rate_limit,
            parsed.created,
        )

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("TrafficPolicy", self.namespace, self.name)


def conflicts(policies: Iterable[traffic.TrafficPolicy]) -> dict[str, str]:
    """`namespace/name` of each policy not in force -> why: another, older one has the same target."""
    winners: dict[tuple[str, int | None], traffic.TrafficPolicy] = {}
    out: dict[str, str] = {}
    for policy in sorted(policies, key=lambda p: p.precedence()):
        target = (policy.service, policy.target.port)
        winner = winners.setdefault(target, policy)
        if winner is not policy:
            where = f"Service {policy.service}" + (f" port {policy.target.port}" if policy.target.port else "")
            out[policy.ref] = f"not in force: TrafficPolicy {winner.ref} is older and targets the same {where}"
    return out
