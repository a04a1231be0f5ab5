"""Renders the whole install from `Values`: the objects in the order they can be applied (the namespace, the
CRDs, RBAC, then the workloads), as plain dicts or as one multi-document YAML stream."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from daemonset.control import control
from daemonset.crds import crds
from daemonset.node import node
from daemonset.rbac import rbac
from daemonset.values import Values


def render(values: Values) -> list[dict[str, Any]]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": values.namespace, "labels": {"app.kubernetes.io/part-of": "meshlet"}},
    }
    # A deep copy: parts are shared between objects (the node env of both containers), and a caller that edits
    # one object must not change another.
    return copy.deepcopy([namespace, *crds(), *rbac(values), *control(values), node(values)])


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """One YAML document per object, keys in the order they were built (apiVersion, kind, metadata first)."""
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False, explicit_start=True)


class _Dumper(yaml.SafeDumper):
    """Writes a value met twice in full again instead of as an anchor and alias (`&id001`/`*id001`), which
    kubectl reads but people and some tools do not."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
