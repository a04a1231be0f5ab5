"""Recording a pod's enrollment on the pod object, as the local store's stand-in for a PATCH.

On Kubernetes this is a merge patch of `metadata.annotations` (Istio's CNI agent does the same with
`ambient.istio.io/redirection`). In the local store the agent rewrites the pod's document in the file
it came from, atomically, touching nothing else in that file but formatting; a file that changed in
between or no longer parses is left alone (the next reconcile pass tries again).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

ANNOTATION = "meshlet.io/redirection"


def set_annotation(path: Path, namespace: str, name: str, value: str | None) -> bool:
    """Set (or with None, remove) the redirection annotation of Pod namespace/name in `path`.
    Returns True when the file was rewritten."""
    try:
        text = path.read_text()
        docs = list(yaml.safe_load_all(text))
    except (OSError, yaml.YAMLError):
        return False
    changed = False
    for doc in docs:
        if not _is_pod(doc, namespace, name):
            continue
        annotations: dict[str, Any] = doc["metadata"].setdefault("annotations", {}) or {}
        if annotations.get(ANNOTATION) == value:
            continue
        if value is None:
            annotations.pop(ANNOTATION, None)
        else:
            annotations[ANNOTATION] = value
        if annotations:
            doc["metadata"]["annotations"] = annotations
        else:
            doc["metadata"].pop("annotations", None)
        changed = True
    if not changed:
        return False
    data = yaml.safe_dump_all([d for d in docs if d is not None], sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        if path.read_text() != text:  # edited meanwhile: theirs wins, we retry on the next pass
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _is_pod(doc: object, namespace: str, name: str) -> bool:
    if not isinstance(doc, dict) or doc.get("kind") != "Pod" or not isinstance(doc.get("metadata"), dict):
        return False
    meta = doc["metadata"]
    return bool(meta.get("name") == name and meta.get("namespace") == namespace)
