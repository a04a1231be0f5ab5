"""`meshlet label`'s parsing and store rewrite: kubectl's KEY=VALUE / KEY- syntax, one file touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshlet.cli.label import LabelError, parse_changes, relabel


def test_parse_sets_and_removes() -> None:
    assert parse_changes(("meshlet.io/dataplane-mode=ambient", "team-")) == {
        "meshlet.io/dataplane-mode": "ambient",
        "team": None,
    }


@pytest.mark.parametrize(
    ("arg", "words"),
    [("nolabel", "KEY=VALUE or KEY-"), ("bad key=x", "not a valid label key"), ("k=bad value", "not a valid label")],
)
def test_parse_rejects_with_the_argument_named(arg: str, words: str) -> None:
    with pytest.raises(LabelError, match=words) as err:
        parse_changes((arg,))
    assert repr(arg) in str(err.value)


def test_relabel_rewrites_only_the_namespace_document(tmp_path: Path) -> None:
    other = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "plain"}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain", "labels": {"team": "a"}}}
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all([other, ns]))
    (tmp_path / "broken.yaml").write_text("kind: [unclosed")
    path, labels = relabel(tmp_path, "Namespace", "plain", {"meshlet.io/dataplane-mode": "ambient", "team": None})
    assert path == tmp_path / "all.yaml"
    assert labels == {"meshlet.io/dataplane-mode": "ambient"}
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs[0] == other and docs[1]["metadata"]["labels"] == labels
    assert (tmp_path / "broken.yaml").read_text() == "kind: [unclosed"


def test_relabel_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="no Namespace 'ghost'"):
        relabel(tmp_path, "Namespace", "ghost", {"a": "b"})
    with pytest.raises(LabelError, match="not a directory"):
        relabel(tmp_path / "nope", "Namespace", "x", {"a": "b"})
