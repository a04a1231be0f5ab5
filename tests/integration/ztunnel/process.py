"""A real `python -m ztunnel` process on loopback for lifecycle tests, and the agent's side of ZDS it needs.

The stand-in agent (`ScriptedAgent`) answers every ztunnel that connects with the handshake and an empty pod
snapshot (hello, snapshot_sent), which is all ztunnel's readiness asks of the agent; the pods' own traffic is
the e2e tests' business. Each process gets its own loopback ports, so tests never touch the node's 15000s.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meshlet_contracts import zds as protocol
from tests.integration.control.conftest import TD, free_port


def figure(request: pytest.FixtureRequest, name: str, seconds: float) -> None:
    """Keep a measured time with the test's report (`user_properties`) and print it (`pytest -rP` shows it)."""
    request.node.user_properties.append((name, round(seconds, 3)))
    print(f"{name} = {seconds:.3f}s")


class ScriptedAgent:
    """Listens on a ZDS socket; every connection gets hello and an empty snapshot, then is read to its end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._server.bind(str(path))
        self._server.listen()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="scripted-agent", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError, protocol.ZdsError):
            protocol.send(conn, {"type": "hello", "version": protocol.VERSION})
            protocol.send(conn, {"type": "snapshot_sent"})
            while protocol.recv(conn) is not None:  # acks, until ztunnel goes
                pass

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept (close alone may not)
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._thread.join(timeout=5)


@dataclass
class ZtunnelProcess:
    """One ztunnel for node `node`, its admin and readiness on free loopback ports, its log in `root`."""

    root: Path
    node: str
    control_url: str
    credentials: Path
    zds_socket: Path
    extra_args: tuple[str, ...] = ()
    admin_port: int = field(default_factory=free_port)
    readiness_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / f"ztunnel-{self.node}.log"

    def start(self) -> None:
        """Spawn it (returns at once: tests time how long it takes to become ready)."""
        argv = [
            sys.executable, "-m", "ztunnel", "--node", self.node, "--control", self.control_url,
            "--credentials", str(self.credentials), "--zds-socket", str(self.zds_socket), "--trust-domain", TD,
            "--admin", f"127.0.0.1:{self.admin_port}", "--metrics", f"127.0.0.1:{self.metrics_port}",
            "--readiness", f"127.0.0.1:{self.readiness_port}", "--drain-timeout", "1", *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.readiness_port}/healthz/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:  # refused (not listening yet) or 503 (HTTPError is an OSError)
            return False

    def config_dump(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/config_dump", timeout=2) as r:
            dump: dict[str, Any] = json.loads(r.read())
            return dump

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text()
