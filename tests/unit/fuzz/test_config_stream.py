"""Fuzz the config stream as a node proxy reads it: `wire.decode`, then `apply` with ztunnel's own validator
(`MeshIndex.from_config`), as `ConfigClient` does for every message control sends.

Messages start from what control really sends for a small mesh (a snapshot, and a delta on it) and get a few
nodes changed: items of the wrong type or without their keys, hostile strings (CRLF, NUL, Unicode digits,
regexes that blow up backtracking engines), out-of-range numbers; or the JSON text itself cut, flipped or nested
past any recursion limit. For any of them:
- `decode` raises nothing but `WireError` (the client then reconnects and gets a fresh snapshot);
- `apply` raises nothing outside `client.NACKED` (the client nacks that version and keeps going);
- the held state is never modified, deeply: a nacked message leaves the last good config exactly as it was;
- an accepted state converts, so the data path never holds a version it cannot read.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.store import ConfigStore
from meshlet_contracts import wire
from tests.unit.fuzz import fuzz_settings
from tests.unit.fuzz.mesh_objects import MESH_OBJECTS, mutated_json
from ztunnel.config.client import NACKED
from ztunnel.config.state import ConfigState, apply
from ztunnel.state.mesh import MeshIndex


def validate(state: ConfigState) -> None:
    """ztunnel's validator: a version it cannot convert is nacked."""
    MeshIndex.from_config(state)


def _control_snapshot() -> dict[str, Any]:
    store = ConfigStore(MeshSettings(trust_domain="cluster.local"))
    store.apply([SourceBatch("mesh.yaml", tuple(MESH_OBJECTS))])
    assert not store.all_errors()
    resources = {c: list(items.values()) for c, items in store.state.items()}
    return {"type": "snapshot", "epoch": "e1", "version": 3, "resources": resources,
            "mesh": {"rootNamespaces": ["meshlet-system", "istio-system"]}}  # fmt: skip


SNAPSHOT = _control_snapshot()
HELD = apply(ConfigState(), SNAPSHOT, validate)
DELTA = {
    "type": "delta",
    "epoch": "e1",
    "version": 4,
    "base": 3,
    "upsert": {c: items[:1] for c, items in SNAPSHOT["resources"].items()},
    "remove": {"workloads": [SNAPSHOT["resources"]["workloads"][-1]["uid"]]},
    "mesh": {"rootNamespaces": ["platform"]},
}


@st.composite
def texts(draw: st.DrawFn) -> str:
    """A message as text: control's, with a few nodes changed, and sometimes the text itself damaged."""
    message = draw(mutated_json(draw(st.sampled_from([SNAPSHOT, DELTA])), max_changes=4))
    text = json.dumps(message)
    damage = draw(st.integers(0, 9))  # hypothesis favours small draws: the undamaged text is the common case
    if damage == 8:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 9:
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(["[" * 5000, "{", "\0", "\ud800", '"', "1e999999", "-"])) + text[pos:]
    return text


def held_copy() -> dict[str, Any]:
    return {
        "epoch": HELD.epoch,
        "version": HELD.version,
        **{c: copy.deepcopy(dict(HELD.items(c))) for c in wire.COLLECTIONS},
    }


HELD_BEFORE = held_copy()


def receive(text: str) -> ConfigState | None:
    """What the client does with one text message: the new state, or None when it was refused."""
    try:
        message = wire.decode(text)
    except wire.WireError:
        return None  # the session ends; the client reconnects and is sent a snapshot
    try:
        return apply(HELD, message, validate)
    except NACKED:
        return None


@fuzz_settings(250)
@given(text=texts())
@example(text=json.dumps(SNAPSHOT))
@example(text=json.dumps(DELTA))
@example(text="[" * 100_000)  # found by this fuzzer: RecursionError escaped `run` and ended the config client
@example(text='{"type": "snapshot", "epoch": "e", "version": 1, "resources": ' + "[" * 50_000)
def test_a_hostile_message_is_applied_whole_or_refused_and_the_last_good_state_stays(text: str) -> None:
    new = receive(text)
    assert held_copy() == HELD_BEFORE, "the held state was modified"
    if new is not None:
        index = MeshIndex.from_config(new)  # what the client hands the data path must convert (again)
        assert isinstance(new.version, int)
        roots = index.root_namespaces  # named by the message, or kept: never a string, never empty
        assert isinstance(roots, tuple) and roots and all(isinstance(r, str) and r for r in roots)


@fuzz_settings(100)
@given(items=st.lists(mutated_json(SNAPSHOT["resources"]["workloads"][0], max_changes=2), min_size=1, max_size=3),
       collection=st.sampled_from(wire.COLLECTIONS))  # fmt: skip
def test_items_of_any_shape_in_any_collection_are_applied_or_nacked(items: list[Any], collection: str) -> None:
    message = {"type": "snapshot", "epoch": "e2", "version": 9, "resources": {collection: items}}
    new = receive(json.dumps(message))
    assert held_copy() == HELD_BEFORE
    if new is not None:
        MeshIndex.from_config(new)
