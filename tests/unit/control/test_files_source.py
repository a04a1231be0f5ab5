"""The file source reports exactly what changed, keeps a broken file's objects, and deletes removed ones."""

from __future__ import annotations

from pathlib import Path

from control.model.fields import ObjectKey
from control.sources.files import FileSource

NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n"


def test_initial_scan_reads_multi_document_files_recursively_and_skips_dotfiles(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(NS % "one" + "---\n" + NS % "two" + "---\n")
    (tmp_path / "sub" / "b.yml").write_text(NS % "three")
    (tmp_path / ".a.yaml.tmp").write_text("{{{")
    (tmp_path / "notes.txt").write_text("not yaml")
    batches = FileSource(tmp_path).scan()
    names = sorted(o["metadata"]["name"] for b in batches for o in b.upserts)
    assert names == ["one", "three", "two"]
    assert not any(b.errors for b in batches)


def test_only_changed_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS % "one")
    (tmp_path / "b.yaml").write_text(NS % "two")
    src = FileSource(tmp_path)
    src.scan()
    assert src.scan() == []
    (tmp_path / "b.yaml").write_text(NS % "two-changed")
    assert src.scan() == []  # written in place: read once it holds still for a poll
    [batch] = src.scan()
    assert batch.origin.endswith("b.yaml")
    assert batch.deletes == (ObjectKey("Namespace", "", "two"),)


def test_broken_yaml_reports_the_reason_and_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS % "one")
    src = FileSource(tmp_path)
    src.scan()
    (tmp_path / "a.yaml").write_text("kind: Namespace\nmetadata: {name: [unclosed\n")
    src.scan()
    [batch] = src.scan()
    assert batch.deletes == () and batch.upserts == ()
    assert batch.errors[0].startswith("unreadable YAML:")
    (tmp_path / "a.yaml").write_text(NS % "one")
    src.scan()
    [batch] = src.scan()
    assert batch.errors == () and batch.upserts[0]["metadata"]["name"] == "one"


def test_document_without_name_is_reported_with_its_position(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS % "one" + "---\nkind: Namespace\nmetadata: {}\n---\n- a list\n")
    [batch] = FileSource(tmp_path).scan()
    assert len(batch.upserts) == 1
    assert batch.errors == (
        "document 2: metadata.name: required",
        "document 3: expected a Kubernetes object (a mapping), got list",
    )


def test_removed_file_deletes_its_objects(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS % "one")
    src = FileSource(tmp_path)
    src.scan()
    (tmp_path / "a.yaml").unlink()
    [batch] = src.scan()
    assert batch.deletes == (ObjectKey("Namespace", "", "one"),)


def test_half_written_file_is_not_read_until_it_holds_still(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(NS % "one" + "---\n" + NS % "two")
    src = FileSource(tmp_path)
    src.scan()
    path.write_text(NS % "one" + "---\n")  # an editor caught between truncate and the end of its write
    assert src.scan() == []
    path.write_text(NS % "one" + "---\n" + NS % "two")
    assert src.scan() == []
    [batch] = src.scan()
    assert batch.deletes == () and len(batch.upserts) == 2


def test_replaced_by_rename_is_read_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS % "one")
    src = FileSource(tmp_path)
    src.scan()
    (tmp_path / ".new").write_text(NS % "uno")
    (tmp_path / ".new").rename(tmp_path / "a.yaml")
    [batch] = src.scan()
    assert batch.upserts[0]["metadata"]["name"] == "uno"


def test_unreadable_entry_is_reported_and_the_rest_still_read(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "b.yaml").write_text(NS % "two")
    batches = {Path(b.origin).name: b for b in FileSource(tmp_path).scan()}
    assert batches["loop.yaml"].errors[0].startswith("unreadable:")
    assert batches["b.yaml"].upserts[0]["metadata"]["name"] == "two"
