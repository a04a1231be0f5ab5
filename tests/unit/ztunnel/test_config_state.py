"""ztunnel applies snapshots and deltas whole, or not at all."""

from __future__ import annotations

from typing import Any

import pytest

from ztunnel.config.state import ConfigRejected, ConfigState, apply


def snapshot(version: int = 1, **resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "snapshot", "epoch": "e1", "version": version, "resources": resources}


W1 = {"uid": "u1", "name": "a"}
W2 = {"uid": "u2", "name": "b"}


def test_snapshot_then_delta() -> None:
    s = apply(ConfigState(), snapshot(workloads=[W1]))
    assert dict(s.items("workloads")) == {"u1": W1}
    s2 = apply(
        s,
        {
            "type": "delta",
            "epoch": "e1",
            "version": 2,
            "base": 1,
            "upsert": {"workloads": [W2]},
            "remove": {"workloads": ["u1"]},
        },
    )
    assert dict(s2.items("workloads")) == {"u2": W2} and s2.version == 2
    assert dict(s.items("workloads")) == {"u1": W1}  # the held state is never modified


def test_delta_on_the_wrong_base_is_rejected() -> None:
    s = apply(ConfigState(), snapshot(workloads=[W1]))
    with pytest.raises(ConfigRejected, match="does not apply to held e1/1"):
        apply(s, {"type": "delta", "epoch": "e1", "version": 5, "base": 4, "upsert": {}, "remove": {}})


def test_bad_items_are_rejected_and_validation_can_refuse() -> None:
    with pytest.raises(ConfigRejected, match=r"workloads\[0\]: item without its key fields"):
        apply(ConfigState(), snapshot(workloads=[{"name": "x"}]))
    with pytest.raises(ConfigRejected, match="unknown collection 'routes'"):
        apply(ConfigState(), snapshot(routes=[]))

    def refuse(_: ConfigState) -> None:
        raise ConfigRejected("workload u1: no identity")

    with pytest.raises(ConfigRejected, match="no identity"):
        apply(ConfigState(), snapshot(workloads=[W1]), refuse)
