"""Installs meshlet on a Kubernetes cluster: the manifests (CRDs, RBAC, the control Deployment, the node
DaemonSet) rendered from a few values, and the Dockerfile of the one image every container runs.

`render(Values())` builds the objects as plain dicts; `to_yaml` writes them as one multi-document YAML stream,
which is what `meshlet install --dry-run` prints. Nothing here talks to a cluster.
"""

from __future__ import annotations

from daemonset.render import render, to_yaml
from daemonset.values import Resources, Values, ValuesError

__all__ = ["Resources", "Values", "ValuesError", "render", "to_yaml"]
