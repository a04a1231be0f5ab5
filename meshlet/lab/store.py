"""The lab's side of the local store: Kubernetes-shaped objects as YAML files in one directory.

One file per object, `<kind>.<namespace>.<name>.yaml` (cluster-scoped objects use `_` as namespace), so a
change to one object touches one file and a watcher sees exactly what changed. Files are written
atomically (`control.atomic`: temporary file, fsync, rename): a reader never sees half an object.
Temporary files start with a dot; readers of the store skip dot-files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from control.atomic import write_atomic


def object_filename(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['kind'].lower()}.{meta.get('namespace', '_')}.{meta['name']}.yaml"


def write_objects(store: Path, objs: Iterable[dict[str, Any]]) -> list[Path]:
    """Write each object to its own file in `store` (created if needed); returns the paths written."""
    store.mkdir(parents=True, exist_ok=True)
    paths = []
    for obj in objs:
        path = store / object_filename(obj)
        write_atomic(path, yaml.safe_dump(obj, sort_keys=False).encode())
        paths.append(path)
    return paths


def remove_objects(store: Path, objs: Iterable[dict[str, Any]]) -> list[Path]:
    """Remove each object's file from `store` (one already gone is fine); returns the paths removed."""
    removed = []
    for obj in objs:
        path = store / object_filename(obj)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
