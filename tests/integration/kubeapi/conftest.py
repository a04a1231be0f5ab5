"""The test API server, and raw HTTP helpers for what the official client hides (status codes, watch lines)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kubeapi import KubeApiServer

MERGE = "application/merge-patch+json"


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer(history=50, bookmark_interval=0.2) as server:
        yield server


def raw(
    api: KubeApiServer, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    """One request; returns (HTTP status, decoded JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": content_type} if data is not None else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


class RawWatch:
    """A watch read line by line over plain HTTP, to see exactly what the server streams."""

    def __init__(self, api: KubeApiServer, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()

    def next(self) -> dict[str, Any] | None:
        """The next event, or None when the server ended the stream."""
        line = self.resp.readline()
        return json.loads(line) if line else None

    def close(self) -> None:
        self.resp.close()
        self.conn.close()

    def __enter__(self) -> RawWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pod(
    name: str, node: str = "node-1", labels: dict[str, str] | None = None, namespace: str = "default"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": node, "serviceAccountName": "default", "containers": [{"name": "c", "image": "app"}]},
    }
