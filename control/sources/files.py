"""The `file` source: a directory (recursively) of Kubernetes-shaped YAML, multi-document files allowed.

A file is read when its (inode, size, mtime) changed, and only then; reading and parsing run in a worker
thread so the event loop never blocks on disk. Where inotify works (`inotify.Watcher`) the kernel names the
paths that changed and only those are looked at, at once; everything is scanned again every
`full_scan_interval` (5 s) and whenever inotify lost events, since it cannot see a network filesystem or a
bind mount changed from elsewhere. Without inotify the whole directory is polled every `interval` (100 ms).
At 10,000 files a full scan takes tens of milliseconds: polling that every 100 ms cost most of a core.

Last-good semantics start here: a file that no longer parses keeps all its objects (we cannot tell what
it meant); a document without kind or name is reported and ignored; an object that disappears from a
file that still parses is deleted.

A reader that needs only part of the store (a node's agent: Namespaces and its own node's Pods) gives a
`StoreView`: a file its bytes show cannot hold such an object is not parsed, and objects it does not keep are
left out as if the file did not hold them (so a pod moved to another node is deleted from that reader's view).

Whatever goes wrong with one file is that file's error, never the watcher's: a parser that gives up on
3,000 nested brackets (RecursionError), a file that is not UTF-8, anything else one file can provoke,
becomes an error on that file's origin (in /debug/status and the config-errors metric) while every other
file, and every later change, is still read.

Nesting is bounded twice. While scanning, `_BoundedLoader` refuses to open a collection deeper than
`MAX_DEPTH`: the parser and composer recurse once per level (RecursionError at about 1,000), and the
pure-Python scanner's cost grows with the square of the depth (about a second of CPU before that error).
After loading, a document deeper than `MAX_DEPTH` through YAML aliases, or referring to itself, is refused
before it reaches the store, whose readers recurse into values.

libyaml (`CSafeLoader`) loads about 7x faster than the pure-Python loader (5,000 pods: 0.6 s against 4.5 s),
but its composer recurses in C and crashes the process (SIGSEGV) at about 100,000 nested brackets, with no
exception to catch. So when libyaml is present a file bigger than `SMALL_FILE` is first walked as libyaml's
event stream (its parser keeps an explicit stack: no recursion), counting the nesting; only a file within
`MAX_DEPTH` is composed by libyaml, and a deeper one is handed to `_BoundedLoader`, which names the place where
it went too deep. A smaller file cannot nest deep enough to crash it, and goes to libyaml at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from control.model.fields import CLUSTER_SCOPED, ObjectKey, ValidationError, opt_str, req_str
from control.sources.base import Sink, SourceBatch
from control.sources.inotify import Changes, Watcher

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml", ".json")
MAX_DEPTH = 100
"""Deepest nesting of mappings and lists accepted in one document (Kubernetes objects stay far below it)."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing (as a ScannerError with its position) nesting deeper than `MAX_DEPTH`."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 (PyYAML's name)
        self._check_depth()
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        added = super().add_indent(column)
        if added:
            self._check_depth()
        return added

    def _check_depth(self) -> None:
        if self.flow_level + len(self.indents) >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.get_mark())


_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)
SMALL_FILE = 16 * 1024
"""A file this small nests at most this many levels, a tenth of what crashes libyaml's composer (on a worker
thread's 8 MB stack): it needs no walk of its events first (the walk costs as much as the load)."""
_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def load_documents(data: bytes) -> list[Any]:
    """Every document of one file, as the safe loader makes them; libyaml's when present and safe for `data`
    (see the module's docstring). Raises yaml.YAMLError (with a position) for YAML that does not parse."""
    if _FAST_LOADER is not None and (len(data) <= SMALL_FILE or _shallow(data)):
        try:
            return list(yaml.load_all(data, Loader=_FAST_LOADER))
        except (yaml.YAMLError, RecursionError):
            pass  # the bounded loader says what is wrong, in its words and with the position users see elsewhere
    return list(yaml.load_all(data, Loader=_BoundedLoader))


def _shallow(data: bytes) -> bool:
    """Whether no collection in `data` nests deeper than `MAX_DEPTH` (libyaml's events, in C, without recursion).
    A file that does not parse is not shallow: the bounded loader then says where it broke."""
    depth = 0
    try:
        for event in yaml.parse(data, Loader=_FAST_LOADER):
            if isinstance(event, _OPENS):
                depth += 1
                if depth >= MAX_DEPTH:
                    return False
            elif isinstance(event, _CLOSES):
                depth -= 1
    except yaml.YAMLError:
        return False
    return True


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


class StoreView(Protocol):
    """The part of the store one reader needs."""

    def relevant(self, data: bytes) -> bool:
        """False only when a file's bytes cannot hold an object `keep` would keep (the file is then not parsed)."""
        ...

    def keep(self, obj: dict[str, Any]) -> bool:
        """Whether a (named) object is part of the view."""
        ...


class FileSource:
    """Watches `directory` and reports each changed file as one batch (origin: the file's path)."""

    name = "file"

    def __init__(
        self, directory: Path, interval: float = 0.1, full_scan_interval: float = 5.0, view: StoreView | None = None
    ) -> None:
        self.directory = directory
        self.view = view
        self.interval = interval
        """Seconds between polls without inotify, and before a file written in place is looked at again."""
        self.full_scan_interval = full_scan_interval
        self._seen: dict[Path, _Seen] = {}
        self._pending: dict[Path, Signature] = {}
        """Files seen changing in the last poll: read once their signature holds still for one more."""
        self._started = False
        self.watcher: Watcher | None = None

    async def run(self, sink: Sink) -> None:
        woken = asyncio.Event()
        loop = asyncio.get_running_loop()
        next_full = 0.0
        try:
            while True:
                if self.watcher is not None and not self.watcher.watching:  # the directory itself went
                    loop.remove_reader(self.watcher.fd)
                    self.watcher.close()
                    self.watcher = None  # polled until it is back, then watched afresh
                if self.watcher is None and self.directory.is_dir():
                    self.watcher = Watcher.open(self.directory)
                    if self.watcher is not None:
                        loop.add_reader(self.watcher.fd, woken.set)
                        next_full = 0.0  # what changed before the watch was added is found by a full scan
                woken.clear()
                due = loop.time() >= next_full
                try:
                    batches, full = await asyncio.to_thread(self._pass, due)
                    if full:
                        next_full = loop.time() + self.full_scan_interval
                except OSError as exc:  # the directory itself went bad: keep serving, keep looking
                    log.error("scanning %s failed: %s", self.directory, exc)
                    batches = []
                if batches or not self._started:
                    sink(batches)
                    self._started = True
                if self.watcher is None or self._pending:
                    await asyncio.sleep(self.interval)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), max(0.0, next_full - loop.time()))
        finally:
            if self.watcher is not None:
                loop.remove_reader(self.watcher.fd)
                self.watcher.close()
                self.watcher = None

    def _pass(self, due: bool) -> tuple[list[SourceBatch], bool]:
        """One look (in a worker thread: draining inotify may walk a new directory): the batches, and whether
        it was a full scan (no watcher, events lost, or `due`). Events are drained either way; a full scan
        covers whatever they named."""
        changes = self.watcher.changed() if self.watcher is not None else Changes()
        if self.watcher is None or self.watcher.overflowed or due:
            if self.watcher is not None:
                self.watcher.overflowed = False
            return self.scan(), True
        return self.scan_paths(changes), False

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
                if self._examine(path, batches):
                    present.add(path)
        for path in sorted(set(self._seen) - present):
            self._gone(path, batches)
        return batches

    def scan_paths(self, changes: Changes) -> list[SourceBatch]:
        """Batches for what inotify named only (and files waiting to hold still); a directory that went
        stands for every file known below it."""
        batches: list[SourceBatch] = []
        wanted = {p for p in changes.files | set(self._pending) if self._is_store_file(p)}
        for path in sorted(wanted):
            if not self._examine(path, batches) and path in self._seen:
                self._gone(path, batches)
        for gone_dir in changes.gone_dirs:
            prefix = f"{gone_dir}{os.sep}"
            for path in sorted(k for k in self._seen if str(k).startswith(prefix)):
                if not path.exists():
                    self._gone(path, batches)
        return batches

    def read(self, path: Path) -> SourceBatch:
        """One file's batch as a first read sees it (`meshlet validate`); errors are the batch's, never raised."""
        try:
            st = path.stat()
        except OSError as exc:
            return SourceBatch(origin=str(path), errors=(f"unreadable: {exc}",))
        return self._read(path, (st.st_ino, st.st_size, st.st_mtime_ns), None)

    def _is_store_file(self, path: Path) -> bool:
        """Whether `path` is one `_files` would list (suffix, nothing hidden on the way)."""
        try:
            parts = path.relative_to(self.directory).parts
        except ValueError:
            return False
        return bool(parts) and not any(p.startswith(".") for p in parts) and path.name.endswith(SUFFIXES)

    def _gone(self, path: Path, batches: list[SourceBatch]) -> None:
        gone = self._seen.pop(path)
        self._pending.pop(path, None)
        batches.append(SourceBatch(origin=str(path), deletes=tuple(sorted(gone.keys))))

    def _examine(self, path: Path, batches: list[SourceBatch]) -> bool:
        """Look at one file, adding its batch when it changed; returns whether it is there."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False  # removed (between listing and stat)
        except OSError as exc:  # a symlink loop, a permission problem: this file only
            if path not in self._seen:  # else keep what it held; the error was reported when it first occurred
                self._seen[path] = _Seen((0, 0, 0))
                batches.append(SourceBatch(origin=str(path), errors=(f"unreadable: {exc}",)))
            return True
        if not stat.S_ISREG(st.st_mode):
            return False  # a directory or special file with a store file's name: nothing to read
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        seen = self._seen.get(path)
        if seen is not None and seen.signature == signature:
            self._pending.pop(path, None)
            return True
        # An editor writing in place may be caught mid-write (an empty or cut file parses fine and would delete
        # objects): a file changed in place is read once it has held still for one poll. A new inode (an atomic
        # rename, as the lab and most tools write) is complete at once.
        in_place = seen is not None and seen.signature[0] == signature[0]
        if in_place and self._pending.get(path) != signature:
            self._pending[path] = signature
            return True
        self._pending.pop(path, None)
        batch = self._read(path, signature, seen)
        if seen is not None or batch.upserts or batch.errors:  # a new file with nothing in the view says nothing
            batches.append(batch)
        return True

    def _read(self, path: Path, signature: tuple[int, int, int], seen: _Seen | None) -> SourceBatch:
        before = seen.keys if seen is not None else set()
        view = self.view
        try:
            data = path.read_bytes()
            docs = load_documents(data) if view is None or view.relevant(data) else []
        except Exception as exc:  # whatever one file provokes is that file's error, not the watcher's end
            # Keep every object the file held: an editor's half-written save must not delete them.
            self._seen[path] = _Seen(signature, before)
            return SourceBatch(origin=str(path), errors=(f"unreadable YAML: {_reason(exc)}",))
        upserts: list[dict[str, Any]] = []
        errors: list[str] = []
        keys: set[ObjectKey] = set()
        for i, doc in enumerate(docs):
            if doc is None:
                continue  # an empty document (a trailing ---) is not an error
            if not isinstance(doc, dict):
                errors.append(f"document {i + 1}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
                continue
            if not _within_depth(doc, MAX_DEPTH):
                # Kept under its name when it has one, so its last good version stays rather than being
                # deleted; a name that is itself the deep part cannot even be quoted in an error.
                with contextlib.suppress(Exception):
                    keys.add(raw_key(doc))
                errors.append(f"document {i + 1}: nested deeper than {MAX_DEPTH} levels, or refers to itself")
                continue
            try:
                key = raw_key(doc)
            except ValidationError as exc:
                errors.append(f"document {i + 1}: {exc}")
                continue
            if view is not None and not view.keep(doc):
                continue  # not this reader's: as if the file did not hold it
            keys.add(key)
            upserts.append(doc)
        # An object still named in the file stays; one that is gone from it is deleted.
        deletes = tuple(sorted(before - keys))
        self._seen[path] = _Seen(signature, keys)
        return SourceBatch(str(path), tuple(upserts), deletes, tuple(errors))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply for the parser (maximum recursion depth exceeded)"
    text = " ".join(str(exc).split())
    return text if isinstance(exc, yaml.YAMLError | OSError) else f"{type(exc).__name__}: {text}"


def _within_depth(doc: Any, limit: int) -> bool:
    """Whether `doc` nests mappings and lists at most `limit` deep and holds no cycle.

    Iterative (the value may be as deep as the parser allowed) and linear in the number of distinct
    containers: YAML aliases share one object under many parents, so each container's height is
    computed once, by id, and reused.
    """
    if not isinstance(doc, dict | list):
        return True
    heights: dict[int, int] = {}
    # The path from the root: each container, an iterator over its children, its tallest child so far.
    path: list[tuple[Any, Iterator[Any], list[int]]] = [(doc, _children(doc), [0])]
    on_path = {id(doc)}
    while path:
        node, children, tallest = path[-1]
        child = next(children, _END)
        if child is _END:
            path.pop()
            on_path.discard(id(node))
            heights[id(node)] = height = tallest[0] + 1
            if path:
                path[-1][2][0] = max(path[-1][2][0], height)
            continue
        if not isinstance(child, dict | list):
            continue
        if id(child) in on_path:
            return False  # an alias to one of its own ancestors
        known = heights.get(id(child))
        if known is not None:
            if len(path) + known > limit:
                return False
            tallest[0] = max(tallest[0], known)
            continue
        if len(path) + 1 > limit:
            return False
        path.append((child, _children(child), [0]))
        on_path.add(id(child))
    return True


_END = object()


def _children(value: dict[Any, Any] | list[Any]) -> Iterator[Any]:
    return iter(value.values()) if isinstance(value, dict) else iter(value)
