"""Recording enrollment on the pod object in the local store."""

from __future__ import annotations

from pathlib import Path

import yaml

from agent.annotating import ANNOTATION, set_annotation

DOCS = [
    {"kind": "Namespace", "metadata": {"name": "mesh"}},
    {"kind": "Pod", "metadata": {"name": "a", "namespace": "mesh"}, "spec": {"nodeName": "n1"}},
    {"kind": "Pod", "metadata": {"name": "b", "namespace": "mesh", "annotations": {"x": "y"}}},
]


def test_sets_and_removes_only_on_the_named_pod(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all(DOCS))
    assert set_annotation(path, "mesh", "a", "enabled")
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs[1]["metadata"]["annotations"] == {ANNOTATION: "enabled"}
    assert docs[0] == DOCS[0] and docs[2] == DOCS[2] and docs[1]["spec"] == {"nodeName": "n1"}
    assert not set_annotation(path, "mesh", "a", "enabled")  # already so: file untouched
    assert set_annotation(path, "mesh", "a", None)
    assert list(yaml.safe_load_all(path.read_text())) == DOCS


def test_other_annotations_survive(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump_all(DOCS))
    set_annotation(path, "mesh", "b", "enabled")
    assert list(yaml.safe_load_all(path.read_text()))[2]["metadata"]["annotations"] == {"x": "y", ANNOTATION: "enabled"}


def test_broken_or_missing_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Pod\nmetadata: {name: [\n")
    assert not set_annotation(path, "mesh", "a", "enabled")
    assert path.read_text() == "kind: Pod\nmetadata: {name: [\n"
    assert not set_annotation(tmp_path / "gone.yaml", "mesh", "a", "enabled")
