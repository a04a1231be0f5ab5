"""The CLI's cluster commands against the in-process API server, through a kubeconfig as a user would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from meshlet.cli.main import cli
from tests.kubeapi import KubeApiServer


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer(history=200) as server:
        yield server


@pytest.fixture
def kubeconfig(api: KubeApiServer, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


def meshlet(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """`meshlet ARGS` in-process; KUBECONFIG unset unless given, so only what the test passes is used."""
    return CliRunner().invoke(cli, list(args), env={"KUBECONFIG": None, **(env or {})})


def seed(api: KubeApiServer, group: str, version: str, plural: str, namespace: str, body: dict[str, Any]) -> None:
    """Write an object as a controller or the kubelet would, status included."""
    api.store.create(api.store.find(group, version, plural), namespace, body, keep_status=True)
