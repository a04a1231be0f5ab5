"""`meshlet label namespace|pod NAME KEY=VALUE | KEY-`: change labels in the local store or on a cluster.

The store is a directory of Kubernetes-shaped YAML: the file holding the Namespace (or Pod) is rewritten
atomically (other documents in it untouched), and the agents and control pick the change up from
there. On a cluster (`relabel_cluster`) the change is a merge patch of metadata.labels through the API
server, as `kubectl label --overwrite` sends it, and control and the agents see it through their watches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from control.atomic import write_atomic

# Matched with fullmatch: `$` would also match before a trailing newline and let `app=web\n` through.
_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


class LabelError(ValueError):
    """A label argument or the store is not usable; the message names which and why."""


def parse_changes(args: tuple[str, ...]) -> dict[str, str | None]:
    """`KEY=VALUE` sets, `KEY-` removes (kubectl's syntax)."""
    if not args:
        raise LabelError("give at least one KEY=VALUE (to set) or KEY- (to remove)")
    changes: dict[str, str | None] = {}
    for arg in args:
        if arg.endswith("-") and "=" not in arg:
            key, value = arg[:-1], None
        elif "=" in arg:
            key, _, value = arg.partition("=")
        else:
            raise LabelError(f"{arg!r}: expected KEY=VALUE or KEY-")
        if not _KEY.fullmatch(key) or len(key.rpartition("/")[2]) > 63:
            raise LabelError(f"{arg!r}: {key!r} is not a valid label key")
        if value is not None and (not _VALUE.fullmatch(value) or len(value) > 63):
            raise LabelError(f"{arg!r}: {value!r} is not a valid label value (63 chars of [A-Za-z0-9-_.])")
        changes[key] = value
    return changes


def _is(doc: Any, kind: str, name: str, namespace: str | None) -> bool:
    if not isinstance(doc, Mapping) or doc.get("kind") != kind:
        return False
    meta = doc.get("metadata") or {}
    return bool(meta.get("name") == name and (namespace is None or (meta.get("namespace") or "default") == namespace))


def relabel(
    store: Path, kind: str, name: str, changes: Mapping[str, str | None], namespace: str | None = None
) -> tuple[Path, dict[str, str]]:
    """Apply `changes` to the labels of `kind/name` (in `namespace`; None: a cluster-scoped kind); returns its file
    and new labels."""
    if not store.is_dir():
        raise LabelError(f"the store {store} is not a directory")
    for path in sorted(store.glob("*.y*ml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue  # broken files are control's to report; they cannot hold the object we change
        hits = [d for d in docs if _is(d, kind, name, namespace)]
        if not hits:
            continue
        labels: dict[str, str] = {}
        for doc in hits:
            meta = doc["metadata"]
            labels = dict(meta.get("labels") or {})
            for key, value in changes.items():
                if value is None:
                    labels.pop(key, None)
                else:
                    labels[key] = value
            if labels:
                meta["labels"] = labels
            else:
                meta.pop("labels", None)
        data = yaml.safe_dump_all([d for d in docs if d is not None], sort_keys=False)
        write_atomic(path, data.encode())
        return path, labels
    where = f" in namespace {namespace!r}" if namespace is not None else ""
    raise LabelError(f"no {kind} {name!r}{where} in the store {store}")


def relabel_cluster(
    api: Any, kind: str, name: str, namespace: str, changes: Mapping[str, str | None]
) -> dict[str, str]:
    """Apply `changes` to a Namespace's or Pod's labels on the cluster with a merge patch of metadata.labels
    (`null` removes a key), as `kubectl label --overwrite` does; returns the labels now on the object."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from meshlet.cli.kubecli import read, typed_api

    core = typed_api(client.CoreV1Api, api)
    body = {"metadata": {"labels": dict(changes)}}
    merge = "application/merge-patch+json"
    try:
        if kind == "namespace":
            obj = read(core.patch_namespace, name, body, _content_type=merge)
        else:
            obj = read(core.patch_namespaced_pod, name, namespace, body, _content_type=merge)
    except ApiException as exc:
        if exc.status == 404:
            where = f" in namespace {namespace}" if kind == "pod" else ""
            raise LabelError(f"no {kind} {name!r}{where} on the cluster") from None
        raise LabelError(f"the API server refused the label change: HTTP {exc.status} {exc.reason}") from None
    return dict(obj["metadata"].get("labels") or {})
