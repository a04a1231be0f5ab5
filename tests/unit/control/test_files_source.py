"""The file source reports exactly what changed, keeps a broken file's objects, and deletes removed ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from control.model.fields import ObjectKey
from control.sources.base import SourceBatch
from control.sources.files import MAX_DEPTH, FileSource

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


async def _watch_until(src: FileSource, seen: list[SourceBatch], condition: Callable[[], bool], what: str) -> None:
    """Run the watcher (as control and the agent do) until `condition` holds; fail after 5 s naming `what`."""
    task = asyncio.create_task(src.run(seen.extend))
    try:
        deadline = asyncio.get_running_loop().time() + 5.0
        while not condition():
            if task.done():
                raise AssertionError(f"the file source stopped ({task.exception()!r}) before {what}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after 5s waiting for {what}")
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_file_nested_3000_deep_is_that_files_error_and_later_files_are_still_read(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS % "one")
    src = FileSource(tmp_path, interval=0.01)
    seen: list[SourceBatch] = []
    await _watch_until(src, seen, lambda: len(seen) >= 1, "the initial state")
    (tmp_path / "deep.yaml").write_text("[" * 3000)  # 3 KB: the parser would recurse once per bracket
    (tmp_path / "b.yaml").write_text(NS % "two")
    (tmp_path / "a.yaml").write_text(NS % "uno")

    def names() -> set[str]:
        return {o["metadata"]["name"] for b in seen for o in b.upserts}

    await _watch_until(src, seen, lambda: {"two", "uno"} <= names(), "the files written after the deep one")
    [deep] = [b for b in seen if b.origin.endswith("deep.yaml")]
    [reason] = deep.errors
    assert reason.startswith(f"unreadable YAML: nested deeper than {MAX_DEPTH} levels") and "line 1, column" in reason
    # And a change after that is still seen.
    (tmp_path / "c.yaml").write_text(NS % "three")
    await _watch_until(src, seen, lambda: "three" in names(), "a file written later still")


def test_a_megabyte_of_brackets_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "deep.yaml").write_text("{" * 1_000_000)  # refused at the 101st, the rest never scanned
    started = time.monotonic()
    [batch] = FileSource(tmp_path).scan()
    assert time.monotonic() - started < 5.0
    assert batch.errors[0].startswith(f"unreadable YAML: nested deeper than {MAX_DEPTH} levels")


def test_a_document_nested_too_deep_through_aliases_keeps_its_last_good_version(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(NS % "one" + "---\n" + NS % "two")
    src = FileSource(tmp_path)
    src.scan()
    half = MAX_DEPTH // 2 + 1  # each part is within the limit as written; the alias stacks them
    deep = f"a: &a {'[' * half}x{']' * half}\n  b: {'[' * half}*a{']' * half}"
    path.write_text(NS % "one" + f"spec:\n  {deep}\n---\n" + NS % "two")
    src.scan()
    [batch] = src.scan()
    assert batch.errors == (f"document 1: nested deeper than {MAX_DEPTH} levels, or refers to itself",)
    assert [o["metadata"]["name"] for o in batch.upserts] == ["two"]
    assert batch.deletes == ()  # "one" is still named in the file: its last good version stays


def test_a_document_that_refers_to_itself_or_is_not_utf8_is_reported(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text(NS % "one" + "spec: &a [*a]\n")
    (tmp_path / "latin1.yaml").write_bytes((NS % "two").encode() + b"# caf\xe9\n")
    # Aliases share one list under many parents: checking the depth visits each once (this is 2^50 paths).
    laughs = "".join(f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]\n" for i in range(1, 50))
    (tmp_path / "laughs.yaml").write_text(
        NS % "three" + "spec:\n  l0: &l0 [x]\n" + "".join("  " + s for s in laughs.splitlines(True))
    )
    batches = {Path(b.origin).name: b for b in FileSource(tmp_path).scan()}
    assert batches["loop.yaml"].errors == (f"document 1: nested deeper than {MAX_DEPTH} levels, or refers to itself",)
    assert batches["latin1.yaml"].errors[0].startswith("unreadable YAML: unacceptable character #x00e9")
    assert batches["laughs.yaml"].errors == () and batches["laughs.yaml"].upserts[0]["metadata"]["name"] == "three"


STORE_FILE = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: mesh
  labels: {app: web, "version": 'v1', tier: "front"}
  annotations: {note: "a: b # not a comment", empty: "", multi: "line one\\nline two"}
spec: {nodeName: node1, serviceAccountName: web, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: mesh, labels: &labels {app: web, "version": 'v1'}}
spec:
  selector: *labels
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: null}
  clusterIP: 10.96.0.10
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: mesh}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/a/sa/b"]}}]
    to:
    - operation:
        methods: [GET, HEAD]
        paths: ["/api/*", '/health']
        ports: ["8080"]
    when: [{key: "request.headers[x-token]", values: [yes, no, "on", 0x1F, 1e3, ~, 2026-11-29]}]
"""


def test_libyaml_and_the_pure_python_loader_read_a_store_file_alike() -> None:
    import yaml

    from control.sources.files import _BoundedLoader, load_documents

    assert yaml.__with_libyaml__, "the setup installs PyYAML with libyaml: the store's fast path"
    assert load_documents(STORE_FILE.encode()) == list(yaml.load_all(STORE_FILE.encode(), Loader=_BoundedLoader))


@pytest.mark.parametrize(
    "payload",
    ['"[" * 200_000', '"- " * 200_000 + "x"', '"{a: " * 200_000', '"".join(" " * i + "b:\\n" for i in range(3000))'],
    ids=["flow-sequences", "block-sequences", "flow-mappings", "block-mappings"],
)
def test_nesting_libyaml_would_crash_on_is_refused_with_its_place(payload: str) -> None:
    """libyaml's composer recurses in C (SIGSEGV near 100,000 levels): such a file must never reach it. In a
    process of its own, so a crash shows as one failed test, not a dead suite."""
    import subprocess
    import sys

    code = (
        "from control.sources.files import load_documents\n"
        f"try:\n    load_documents(({payload}).encode())\nexcept Exception as exc:\n    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"the loader died ({proc.returncode}): {proc.stderr[-500:]}"
    assert f"nested deeper than {MAX_DEPTH} levels" in proc.stdout and "line " in proc.stdout, proc.stdout
