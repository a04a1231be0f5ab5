"""The file source hears of changes from the kernel: a change is read at once (the poll and the full scan are
set to a minute here, so only inotify can deliver it), new subdirectories are followed, deletions of files and
of whole directories are reported, and lost events fall back to a full scan."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from control.model.fields import ObjectKey
from control.sources.base import SourceBatch
from control.sources.files import FileSource
from control.sources.inotify import Changes, Watcher

pytestmark = pytest.mark.asyncio
NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n"
SLOW = 60.0
"""Poll and full-scan intervals: longer than any wait here, so what arrives came through inotify."""


def write(path: Path, name: str) -> None:
    """As the lab and kubectl-like tools write: a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(NS % name)
    os.replace(tmp, path)


class Running:
    """The source's loop in a task, its batches collected."""

    def __init__(self, src: FileSource) -> None:
        self.src = src
        self.seen: list[SourceBatch] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.src.run(self.seen.extend))
        await self.until(lambda: self.src.watcher is not None, "the watcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(3):
            while not condition():
                assert self.task is not None and not self.task.done(), f"the source stopped before {what}"
                await asyncio.sleep(0.01)

    def names(self) -> set[str]:
        return {o["metadata"]["name"] for b in self.seen for o in b.upserts}

    def deleted(self) -> set[ObjectKey]:
        return {k for b in self.seen for k in b.deletes}


async def test_a_written_file_is_read_without_waiting_for_a_poll(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "one")
    async with Running(FileSource(tmp_path, interval=SLOW, full_scan_interval=SLOW)) as run:
        await run.until(lambda: "one" in run.names(), "the initial scan")
        write(tmp_path / "b.yaml", "two")
        await run.until(lambda: "two" in run.names(), "the new file, through inotify")
        (tmp_path / "notes.txt").write_text("not a store file")
        (tmp_path / ".hidden.yaml").write_text(NS % "hidden")
        write(tmp_path / "c.yaml", "three")
        await run.until(lambda: "three" in run.names(), "the third file")
        assert "hidden" not in run.names()


async def test_new_subdirectories_are_followed_and_removed_ones_delete_their_objects(tmp_path: Path) -> None:
    async with Running(FileSource(tmp_path, interval=SLOW, full_scan_interval=SLOW)) as run:
        sub = tmp_path / "team" / "apps"
        sub.mkdir(parents=True)
        write(sub / "a.yaml", "in-sub")
        await run.until(lambda: "in-sub" in run.names(), "a file in a new subdirectory")
        write(sub / "b.yaml", "later-in-sub")
        await run.until(lambda: "later-in-sub" in run.names(), "a later file there (its watch)")
        shutil.rmtree(tmp_path / "team")
        gone = {ObjectKey("Namespace", "", "in-sub"), ObjectKey("Namespace", "", "later-in-sub")}
        await run.until(lambda: gone <= run.deleted(), "the removed directory's objects deleted")


async def test_a_file_written_in_place_is_read_once_it_holds_still(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(NS % "one")
    async with Running(FileSource(tmp_path, interval=0.05, full_scan_interval=SLOW)) as run:
        await run.until(lambda: "one" in run.names(), "the initial scan")
        with path.open("w") as f:  # the same inode, as an editor saving in place
            f.write(NS % "uno")
        await run.until(lambda: "uno" in run.names(), "the file changed in place")
        assert ObjectKey("Namespace", "", "one") in run.deleted()
        path.unlink()
        await run.until(lambda: ObjectKey("Namespace", "", "uno") in run.deleted(), "the deleted file")


async def test_lost_events_make_the_next_pass_a_full_scan(tmp_path: Path) -> None:
    src = FileSource(tmp_path, interval=SLOW, full_scan_interval=SLOW)
    async with Running(src) as run:
        await run.until(lambda: src._started, "the initial scan")
        watcher = src.watcher
        assert watcher is not None
        real = watcher.changed

        def overflowing() -> Changes:
            real()  # what the kernel queued is drained, but (as after an overflow) nothing is named
            watcher.overflowed = True
            return Changes()

        watcher.changed = overflowing  # type: ignore[method-assign]
        write(tmp_path / "a.yaml", "found-by-scan")
        await run.until(lambda: "found-by-scan" in run.names(), "the file, found by the full scan")
        assert not watcher.overflowed


async def test_a_watcher_lists_what_changed_and_nothing_else(tmp_path: Path) -> None:
    watcher = Watcher.open(tmp_path)
    assert watcher is not None, "inotify is available on Linux"
    try:
        assert watcher.changed() == Changes()
        (tmp_path / "a.yaml").write_text("x")
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "b.yaml").write_text("y")
        changed = watcher.changed()
        assert tmp_path / "a.yaml" in changed.files and tmp_path / "d" / "b.yaml" in changed.files
        assert watcher.changed() == Changes()
        (tmp_path / "d" / "b.yaml").unlink()
        (tmp_path / "d").rmdir()
        assert watcher.changed() == Changes({tmp_path / "d" / "b.yaml"}, {tmp_path / "d"})
    finally:
        watcher.close()


async def test_a_store_directory_removed_and_made_again_is_watched_afresh(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write(store / "a.yaml", "before")
    async with Running(FileSource(store, interval=0.05, full_scan_interval=SLOW)) as run:
        await run.until(lambda: "before" in run.names(), "the initial scan")
        shutil.rmtree(store)
        await run.until(lambda: ObjectKey("Namespace", "", "before") in run.deleted(), "the removed store's object")
        store.mkdir()
        write(store / "b.yaml", "after")
        await run.until(lambda: "after" in run.names(), "a file in the store made again")
        write(store / "c.yaml", "later")
        await run.until(lambda: "later" in run.names(), "a later file, through the new watch")
        assert run.src.watcher is not None and run.src.watcher.watching
