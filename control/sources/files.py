"""The `file` source: a directory (recursively) of Kubernetes-shaped YAML, multi-document files allowed.

The directory is polled (every 100 ms by default) comparing each file's (inode, size, mtime); only
changed files are read and parsed, in a worker thread so the event loop never blocks on disk. Polling
rather than inotify keeps it correct with editors that replace files by rename and with bind-mounted
or network directories, at a cost that is small for the few hundred files a local store holds.

Last-good semantics start here: a file that no longer parses keeps all its objects (we cannot tell what
it meant); a document without kind or name is reported and ignored; an object that disappears from a
file that still parses is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from control.model.fields import CLUSTER_SCOPED, ObjectKey, ValidationError, opt_str, req_str
from control.sources.base import Sink, SourceBatch

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(slots=True)
class _Seen:
    signature: tuple[int, int, int]
    keys: set[ObjectKey] = field(default_factory=set)


Signature = tuple[int, int, int]


def raw_key(obj: dict[str, Any]) -> ObjectKey:
    """The key of a raw document, before full validation (the store checks names properly)."""
    kind = req_str(obj, "kind")
    namespace = "" if kind in CLUSTER_SCOPED else opt_str(obj, "metadata.namespace")
    return ObjectKey(kind, namespace, req_str(obj, "metadata.name"))


class FileSource:
    """Watches `directory` and reports each changed file as one batch (origin: the file's path)."""

    name = "file"

    def __init__(self, directory: Path, interval: float = 0.1) -> None:
        self.directory = directory
        self.interval = interval
        self._seen: dict[Path, _Seen] = {}
        self._pending: dict[Path, Signature] = {}
        """Files seen changing in the last poll: read once their signature holds still for one more."""
        self._started = False

    async def run(self, sink: Sink) -> None:
        while True:
            try:
                batches = await asyncio.to_thread(self.scan)
            except OSError as exc:  # the directory itself went bad: keep serving, keep looking
                log.error("scanning %s failed: %s", self.directory, exc)
                batches = []
            if batches or not self._started:
                sink(batches)
                self._started = True
            await asyncio.sleep(self.interval)

    def _files(self) -> Iterator[Path]:
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and name.endswith(SUFFIXES):
                    yield Path(root) / name

    def scan(self) -> list[SourceBatch]:
        """Batches for every file added, changed or removed since the last scan."""
        batches: list[SourceBatch] = []
        present: set[Path] = set()
        if not self.directory.is_dir():
            if not self._started:
                log.warning("store directory %s does not exist (yet); serving an empty store", self.directory)
        else:
            for path in self._files():
                present.add(path)
                try:
                    st = path.stat()
                except FileNotFoundError:
                    present.discard(path)  # removed between listing and stat
                    continue
                except OSError as exc:  # a symlink loop, a permission problem: this file only
                    if path in self._seen:
                        continue  # keep what it held; the error was reported when it first occurred
                    self._seen[path] = _Seen((0, 0, 0))
                    batches.append(SourceBatch(origin=str(path), errors=(f"unreadable: {exc}",)))
                    continue
                signature = (st.st_ino, st.st_size, st.st_mtime_ns)
                seen = self._seen.get(path)
                if seen is not None and seen.signature == signature:
                    continue
                # An editor writing in place may be caught mid-write (an empty or cut file parses fine
                # and would delete objects): a file changed in place is read once it has held still
                # for one poll. A new inode (an atomic rename, as the lab and most tools write) is
                # complete at once.
                in_place = seen is not None and seen.signature[0] == signature[0]
                if in_place and self._pending.get(path) != signature:
                    self._pending[path] = signature
                    continue
                self._pending.pop(path, None)
                batches.append(self._read(path, signature, seen))
        for path in sorted(set(self._seen) - present):
            gone = self._seen.pop(path)
            batches.append(SourceBatch(origin=str(path), deletes=tuple(sorted(gone.keys))))
        return batches

    def _read(self, path: Path, signature: tuple[int, int, int], seen: _Seen | None) -> SourceBatch:
        before = seen.keys if seen is not None else set()
        try:
            docs = list(yaml.safe_load_all(path.read_bytes()))
        except (OSError, yaml.YAMLError) as exc:
            # Keep every object the file held: an editor's half-written save must not delete them.
            self._seen[path] = _Seen(signature, before)
            return SourceBatch(origin=str(path), errors=(f"unreadable YAML: {_one_line(exc)}",))
        upserts: list[dict[str, Any]] = []
        errors: list[str] = []
        keys: set[ObjectKey] = set()
        for i, doc in enumerate(docs):
            if doc is None:
                continue  # an empty document (a trailing ---) is not an error
            if not isinstance(doc, dict):
                errors.append(f"document {i + 1}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
                continue
            try:
                key = raw_key(doc)
            except ValidationError as exc:
                errors.append(f"document {i + 1}: {exc}")
                continue
            keys.add(key)
            upserts.append(doc)
        # An object still named in the file stays; one that is gone from it is deleted.
        deletes = tuple(sorted(before - keys))
        self._seen[path] = _Seen(signature, keys)
        return SourceBatch(str(path), tuple(upserts), deletes, tuple(errors))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
