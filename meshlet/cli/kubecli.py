"""What every cluster command shares: the `--kubeconfig` option, when a command means the cluster rather
than the local lab, and an API client with an error a user can act on when there is no cluster to reach."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from control.kube_client import KubeConfigError, load_client


def kubeconfig_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--kubeconfig",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The cluster's kubeconfig (default: $KUBECONFIG, ~/.kube/config or in-cluster, as kubectl).",
    )(f)


def cluster_requested(kubeconfig: Path | None) -> bool:
    """Commands that also work on the local lab use the cluster only when asked: `--kubeconfig` or KUBECONFIG.
    (A lone ~/.kube/config does not switch them, so a lab user's habits keep working.)"""
    return kubeconfig is not None or bool(os.environ.get("KUBECONFIG"))


def api_client(kubeconfig: Path | None) -> Any:
    try:
        return load_client(kubeconfig)
    except KubeConfigError as exc:
        raise click.ClickException(
            f"cannot reach a Kubernetes cluster: {exc}. Pass --kubeconfig PATH or set KUBECONFIG."
        ) from None


def typed_api(kind: Callable[[Any], Any], api: Any) -> Any:
    """`kind(api)` (CoreV1Api, AppsV1Api ...) as Any: the client's models make every field Optional, and the
    commands read answers whose shape the server guarantees."""
    return kind(api)


def read(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The answer of a client call as plain JSON: the client's models refuse objects missing a field they mark
    required (a node without every nodeInfo field), where the commands only need a few fields."""
    response = call(*args, _preload_content=False, **kwargs)
    return json.loads(response.data)
