"""Fuzz the local store: YAML files as the file source reads them, then the store's conversion and versioning.

Extends the hand-picked cases of tests/unit/control/test_files_source.py (brackets, aliases, self-reference,
Latin-1) with generated ones: the objects of a valid mesh (every kind control reads) with a few fields changed to
hostile values of any type, dumped as YAML; or the YAML text itself cut, or with anchors, aliases, tags, merge
keys, tabs, NUL, a BOM or directives inserted. The mesh is first written good, then replaced by the hostile file
(by rename, as the lab and most tools write). For any such file:
- the scan and the store's apply raise nothing (the watcher never ends);
- every error names that file as its origin;
- a file that no longer parses deletes nothing: every object it held keeps its last good version;
- what control would send converts in ztunnel: no version that every node would nack (and be stuck before).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from control.model.mesh import MeshSettings
from control.sources.base import SourceBatch
from control.sources.files import FileSource, raw_key
from control.store import ConfigStore
from tests.unit.fuzz import fuzz_settings
from tests.unit.fuzz.mesh_objects import MESH_OBJECTS, MESH_YAML, mutated_json
from ztunnel.config.state import ConfigState, apply
from ztunnel.state.mesh import MeshIndex


def validate(state: ConfigState) -> None:
    """ztunnel's validator: a version it cannot convert is nacked."""
    MeshIndex.from_config(state)


YAML_NOISE = [
    "&a ", "*a", "*nope", "!!python/object:os.system ", "!!binary ", "!!float ", "<<: *a\n", "{", "[", "}", "]",
    "\t", "\0", "\ufeff", "---\n", "...\n", "%YAML 9.9\n", "? ", ": ", "- ", "'", '"', "#", "|\n", ">-\n", "\\x",
    "\n  ", "0x1F", "1e400", ".nan", "~", "2001-12-14t21:59:43.10-05:00", "y", "no",
]  # fmt: skip


@st.composite
def files(draw: st.DrawFn) -> bytes:
    """The hostile version of the mesh file."""
    docs = [draw(mutated_json(o, max_changes=2)) if draw(st.booleans()) else o for o in MESH_OBJECTS]
    text = yaml.safe_dump_all(docs, allow_unicode=True, sort_keys=False)
    for _ in range(draw(st.integers(0, 2))):  # hypothesis favours 0: most files are well-formed YAML
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(YAML_NOISE)) + text[pos:]
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 19)) == 19:
        raw = raw[: draw(st.integers(0, len(raw)))]  # a cut write
    return raw


@pytest.fixture(autouse=True)
def quiet_converters() -> Iterator[None]:
    # The store logs a traceback for a converter that fails on odd input: expected here, thousands of times.
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a new inode: read at the next scan, as the lab writes


def _converts_in_ztunnel(store: ConfigStore) -> None:
    message = {
        "type": "snapshot",
        "epoch": store.epoch,
        "version": store.version,
        "resources": {c: list(items.values()) for c, items in store.state.items()},
    }
    apply(ConfigState(), message, validate)  # ConfigRejected here: every node would nack it


SEED_KEYS = {raw_key(o) for o in MESH_OBJECTS}


@fuzz_settings(80)
@given(data=files())
@example(data=MESH_YAML.encode())
@example(data=b"{" * 5000)
@example(data=MESH_YAML.encode()[:-40])
@example(data=(MESH_YAML + "---\n!!python/object/apply:os.system [true]\n").encode())
def test_a_hostile_store_file_never_ends_the_watch_and_keeps_the_last_good_objects(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.yaml"
        path.write_text(MESH_YAML)
        source, store = FileSource(Path(tmp)), ConfigStore(MeshSettings(trust_domain="cluster.local"))
        store.apply(source.scan())
        assert not store.all_errors() and set(store.objects) == SEED_KEYS
        _replace(path, data)
        batches = source.scan()
        assert [b.origin for b in batches] == [str(path)]
        store.apply(batches)
        assert {e.origin for e in store.all_errors()} <= {str(path)}  # each error names the file, with a reason
        assert all(e.reason.strip() for e in store.all_errors())
        [batch] = batches
        if any(e.startswith("unreadable YAML") for e in batch.errors):
            assert set(store.objects) == SEED_KEYS, "a file that no longer parses deleted objects"
        _converts_in_ztunnel(store)
        source.scan()  # and the watch goes on: nothing changed, nothing reported
        assert source.scan() == []


@fuzz_settings(30)
@given(docs=st.lists(mutated_json(MESH_OBJECTS[1], max_changes=3), min_size=1, max_size=4))
def test_many_versions_of_one_object_leave_a_state_ztunnel_accepts(docs: list[Any]) -> None:
    store = ConfigStore(MeshSettings(trust_domain="cluster.local"))
    store.apply([SourceBatch("base.yaml", tuple(MESH_OBJECTS))])
    for i, doc in enumerate(docs):
        if isinstance(doc, dict):
            store.apply([SourceBatch(f"v{i}.yaml", (doc,))])
        _converts_in_ztunnel(store)
