"""A pod's status says since when it is in its state: enrollment latency (label written -> `captured`) is read
from it, so it must move only when the state does, not on every reconcile pass."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.enrolling import PodTarget
from agent.reconciling import Reconciler

POD = PodTarget("uid-1", "web-1a", "mesh", "web", ("10.0.0.2",), True)


def reconciler() -> Reconciler:
    backend: Any = SimpleNamespace(name="fake", install=lambda netns, ips: False, remove=lambda netns, ips: None)
    zds: Any = SimpleNamespace(served=set())
    return Reconciler(backend, zds)


def since(r: Reconciler) -> float:
    value = r.pods[POD.uid].to_json()["since"]
    assert isinstance(value, float)
    return value


def test_since_moves_with_the_state_only() -> None:
    r = reconciler()
    before = time.time()
    r._set(POD, "pending", "ztunnel not connected", None)
    pending = since(r)
    assert before <= pending <= time.time()
    r._set(POD, "pending", "ztunnel not connected yet", None)  # another pass, another reason: same state
    assert since(r) == pending
    found: Any = SimpleNamespace(path=Path("/var/run/netns/pod"), inode=1)
    r._set(POD, "captured", None, found)
    captured = since(r)
    assert captured >= pending and r.pods[POD.uid].to_json()["state"] == "captured"
    r._set(POD, "captured", None, found)
    assert since(r) == captured
