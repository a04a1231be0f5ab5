"""A real control process on loopback, with a store directory and provisioned node credentials."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_for

TD = "td.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def namespace(name: str, ambient: bool) -> dict[str, Any]:
    labels = {"meshlet.io/dataplane-mode": "ambient"} if ambient else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(name: str, ns: str, node: str, ip: str, sa: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


@dataclass
class ControlProcess:
    """One control process and everything a test needs to talk to it."""

    root: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    def write(self, name: str, *objs: dict[str, Any]) -> Path:
        path = self.store / name
        tmp = self.store / f".{name}.tmp"
        tmp.write_text(yaml.safe_dump_all(objs))
        os.replace(tmp, path)
        return path

    def provision(self, node: str) -> Path:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "control",
                "provision-node",
                node,
                "--state",
                str(self.state),
                "--out",
                str(self.node_dir(node)),
                "--trust-domain",
                TD,
            ],
            check=True,
            capture_output=True,
        )
        return self.node_dir(node)

    def start(self) -> None:
        log = open(self.root / "control.log", "ab")  # noqa: SIM115 (kept open for the process's life)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "control",
                "serve",
                "--store",
                str(self.store),
                "--state",
                str(self.state),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--metrics",
                f"127.0.0.1:{self.metrics_port}",
                "--trust-domain",
                TD,
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for(lambda: self.get("/ready")[0] == 200, 15, "control ready")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)
        self.proc = None

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.get("/debug/status")[1])
        return result

    def metric(self, name: str, labels: str = "") -> float:
        for line in self.get("/metrics")[1].decode().splitlines():
            if line.startswith(name + (f"{{{labels}}}" if labels else " ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def log(self) -> str:
        return (self.root / "control.log").read_text()


@pytest.fixture
def control_args() -> tuple[str, ...]:
    """Extra `control serve` arguments; a test module overrides this fixture to change them."""
    return ()


@pytest.fixture
def control(tmp_path: Path, control_args: tuple[str, ...]) -> Iterator[ControlProcess]:
    c = ControlProcess(tmp_path, extra_args=control_args)
    c.store.mkdir()
    c.write(
        "cluster.yaml",
        namespace("mesh", ambient=True),
        namespace("plain", ambient=False),
        pod("web-1a", "mesh", "node1", "10.1.0.2"),
        pod("web-1b", "plain", "node1", "10.1.0.3"),
        pod("web-2a", "mesh", "node2", "10.1.1.2", sa="api"),
    )
    c.provision("node1")
    c.provision("node2")
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None:
            c.kill(signal.SIGTERM)
