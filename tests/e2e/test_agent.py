"""The node agent on a lab node: enrollment by labels in both directions, capture into ztunnel's
listener (a stand-in ztunnel that speaks ZDS and listens in the pod netns it is handed), restart safety.

The real ztunnel comes with its own issue; the stand-in here does exactly its in-pod part: it takes
the netns fd from ZDS and opens 15001 inside it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshlet_contracts import zds as protocol
from meshlet_contracts.netns import entered_fd
from tests.conftest import wait_for
from tests.e2e.conftest import Lab
from ztunnel.inpod.client import ZdsClient
from ztunnel.inpod.manager import WorkloadManager


class FakeZtunnel:
    """Speaks ZDS like ztunnel: acks everything, keeps the netns fds, can listen inside a pod's netns."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, Any]] = []
        self.fds: dict[str, int] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                got = protocol.recv(self.sock)
            except TimeoutError:
                continue
            except OSError:
                return
            if got is None:
                return
            message, fds = got
            self.messages.append(message)
            if fds:
                old = self.fds.pop(message["uid"], None)
                if old is not None:
                    os.close(old)
                self.fds[message["uid"]] = fds[0]
            elif message["type"] == "del_workload" and message["uid"] in self.fds:
                os.close(self.fds.pop(message["uid"]))
            protocol.send(self.sock, {"type": "ack", "error": None})

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def listen_in(self, uid: str, port: int) -> socket.socket:
        with entered_fd(self.fds[uid]):
            s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(16)
        s.settimeout(5)
        return s

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(timeout=2)
        for fd in self.fds.values():
            os.close(fd)


class AgentProcess:
    """`python -m agent` in node1's netns and cgroup (so `lab down` ends it too)."""

    def __init__(self, lab: Lab, run: Path) -> None:
        self.lab, self.run = lab, run
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def zds(self) -> Path:
        return self.run / "ztunnel.sock"

    def start(self) -> None:
        node = self.lab.status["nodes"][0]
        log = open(self.run / "agent.log", "ab")  # noqa: SIM115 (kept for the process's life)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "meshlet"), "lab", "--id", self.lab.id, "exec", node["name"], "--",
             sys.executable, "-m", "agent", "--node", node["name"], "--store", self.lab.status["store"],
             "--zds-socket", str(self.zds), "--status-socket", str(self.run / "agent.sock"),
             "--probe-ip", node["gateway"], "--resync", "1"],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        wait_for(lambda: self.status()["store"]["synced"], 15, "the agent's status API")
        # ZDS is served once the agent's first pass is done (a ztunnel then gets the whole node at once).
        wait_for(self.zds.exists, 15, "the agent's ZDS socket")

    def status(self) -> dict[str, Any]:
        out = subprocess.run(
            ["curl", "-sS", "-m", "2", "--unix-socket", str(self.run / "agent.sock"), "http://agent/v1/status"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        result: dict[str, Any] = json.loads(out)
        return result

    def pod(self, name: str) -> dict[str, Any]:
        for pod in self.status()["pods"]:
            if pod["name"] == name:
                result: dict[str, Any] = pod
                return result
        raise KeyError(f"the agent does not report pod {name} (yet)")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def lab(bare_lab: Lab) -> Lab:
    """These tests run the agent by hand, with a fake or in-process ztunnel: no node daemons in the lab."""
    return bare_lab


@pytest.fixture
def agent(lab: Lab, tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(lab, tmp_path)
    a.start()
    try:
        yield a
    finally:
        if a.proc is not None:
            a.kill(signal.SIGTERM)


def save(lab: Lab, pod: str) -> str:
    out = lab.exec(pod, "iptables-save").stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def captured(lab: Lab, pod: str) -> bool:
    return "-A OUTPUT -j MESHLET_OUTPUT" in save(lab, pod)


def annotation(lab: Lab, pod: str) -> str | None:
    ns = lab.pod(pod)["namespace"]
    obj = yaml.safe_load((Path(lab.status["store"]) / f"pod.{ns}.{pod}.yaml").read_text())
    value: str | None = (obj["metadata"].get("annotations") or {}).get("meshlet.io/redirection")
    return value


def set_namespace_label(lab: Lab, namespace: str, ambient: bool) -> None:
    path = Path(lab.status["store"]) / f"namespace._.{namespace}.yaml"
    obj = yaml.safe_load(path.read_text())
    labels = obj["metadata"]["labels"]
    if ambient:
        labels["meshlet.io/dataplane-mode"] = "ambient"
    else:
        labels.pop("meshlet.io/dataplane-mode", None)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(obj))
    os.replace(tmp, path)


def test_pods_running_before_the_agent_are_enrolled_and_pending_without_ztunnel(lab: Lab, agent: AgentProcess) -> None:
    wait_for(lambda: agent.pod("web-1a")["state"] == "pending", 5, "web-1a pending")
    assert captured(lab, "web-1a")
    assert agent.pod("web-1b")["state"] == "plain" and not captured(lab, "web-1b")
    assert "web-2a" not in [p["name"] for p in agent.status()["pods"]]  # another node's pod
    # Fail closed: captured traffic with no ztunnel listening is refused, never sent around it.
    proc = lab.exec("web-1a", "curl", "-sS", "-m", "3", f"http://{lab.pod('web-2b')['ip']}:8080/", check=False)
    assert proc.returncode == 7 and "onnect" in proc.stderr  # curl: (7) Failed to connect / Couldn't connect


def test_ztunnel_gets_the_pods_netns_and_captured_traffic_lands_in_it(lab: Lab, agent: AgentProcess) -> None:
    zt = FakeZtunnel(agent.zds)
    try:
        wait_for(lambda: agent.pod("web-1a")["state"] == "captured", 5, "web-1a captured")
        assert zt.types()[:1] == ["hello"] and "snapshot_sent" in zt.types()
        uid = agent.pod("web-1a")["uid"]
        assert os.fstat(zt.fds[uid]).st_ino == os.stat(f"/var/run/netns/ml-{lab.id}-mesh-web-1a").st_ino
        with zt.listen_in(uid, 15001) as outbound:
            curl = subprocess.Popen(
                [str(Path(sys.executable).parent / "meshlet"), "lab", "--id", lab.id, "exec", "web-1a", "--", "curl",
                 "-sS", "-m", "5", f"http://{lab.pod('web-2b')['ip']}:8080/"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            conn, peer = outbound.accept()
            with conn:
                assert peer[0] == lab.pod("web-1a")["ip"]
                assert b"GET / HTTP/1.1" in conn.recv(4096)
            curl.communicate(timeout=10)
    finally:
        zt.close()


def test_label_flips_capture_both_ways_within_a_second_without_restarting_pods(lab: Lab, agent: AgentProcess) -> None:
    zt = FakeZtunnel(agent.zds)
    try:
        app_pid = lab.exec("web-1b", "sh", "-c", "ss -ltnpH | grep -o 'pid=[0-9]*'").stdout
        set_namespace_label(lab, "plain", ambient=True)
        wait_for(lambda: captured(lab, "web-1b"), 1.5, "capture of web-1b")
        wait_for(lambda: agent.pod("web-1b")["state"] == "captured", 1.0, "web-1b handed to ztunnel")
        assert "add_workload" in zt.types()
        wait_for(lambda: annotation(lab, "web-1b") == "enabled", 2.0, "the pod annotated")
        set_namespace_label(lab, "plain", ambient=False)
        wait_for(lambda: not captured(lab, "web-1b"), 1.5, "release of web-1b")
        wait_for(lambda: "del_workload" in zt.types(), 1.0, "ztunnel told")
        wait_for(lambda: annotation(lab, "web-1b") is None, 2.0, "the annotation removed")
        out = lab.exec("web-1b", "curl", "-sS", "-m", "3", f"http://{lab.pod('web-2b')['ip']}:8080/").stdout
        assert json.loads(out)["peer"].startswith(lab.pod("web-1b")["ip"])  # direct, in plaintext again
        assert lab.exec("web-1b", "sh", "-c", "ss -ltnpH | grep -o 'pid=[0-9]*'").stdout == app_pid
    finally:
        zt.close()


def test_a_file_nested_3000_deep_in_the_store_does_not_stop_the_agent_watching(lab: Lab, agent: AgentProcess) -> None:
    store = Path(lab.status["store"])
    # 3 KB that once ended the agent's store watch for good. It names a Namespace: the agent parses only files that
    # could hold one of its objects (Namespaces, its node's Pods), and this one must reach its parser.
    (store / ".deep.yaml.tmp").write_text("kind: Namespace\nmetadata: " + "[" * 3000)
    os.replace(store / ".deep.yaml.tmp", store / "deep.yaml")
    wait_for(lambda: any("deep.yaml" in e for e in agent.status()["store"]["errors"]), 3.0, "the file's error")
    set_namespace_label(lab, "plain", ambient=True)
    wait_for(lambda: captured(lab, "web-1b"), 3.0, "capture of web-1b after the label")
    tasks = agent.status()["tasks"]
    assert {t["name"] for t in tasks} == {"store", "reconcile", "zds-accept"}
    assert all(t["running"] and t["restarts"] == 0 for t in tasks)


def test_agent_kill_and_restart_changes_no_rule_and_keeps_established_connections(
    lab: Lab, agent: AgentProcess
) -> None:
    zt = FakeZtunnel(agent.zds)
    try:
        wait_for(lambda: agent.pod("web-1a")["state"] == "captured", 5, "web-1a captured")
        uid = agent.pod("web-1a")["uid"]
        before = save(lab, "web-1a")
        with zt.listen_in(uid, 15001) as outbound:
            with entered_fd(zt.fds[uid]):
                client = socket.create_connection((lab.pod("web-2b")["ip"], 8080), timeout=5)
            conn, _ = outbound.accept()
            with client, conn:
                agent.kill(signal.SIGKILL)
                assert save(lab, "web-1a") == before  # fail closed: rules stay while the agent is away
                agent.start()
                wait_for(lambda: agent.pod("web-1a")["state"] in ("captured", "pending"), 5, "re-enrolled")
                assert save(lab, "web-1a") == before
                client.sendall(b"still here")
                assert conn.recv(100) == b"still here"
                conn.sendall(b"and back")
                assert client.recv(100) == b"and back"
    finally:
        zt.close()


def listening(lab: Lab, pod: str) -> set[int]:
    out = lab.exec(pod, "ss", "-ltnH").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


@pytest.mark.asyncio
async def test_ztunnel_inpod_listeners_follow_the_agent(lab: Lab, agent: AgentProcess) -> None:
    manager = WorkloadManager()
    client = ZdsClient(agent.zds, manager)
    task = asyncio.create_task(client.run())

    def holds(condition: Any) -> bool:
        try:
            return bool(condition())
        except (KeyError, subprocess.CalledProcessError):  # not there yet
            return False

    async def until(condition: Any, timeout: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await asyncio.to_thread(holds, condition):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)

    try:
        await until(lambda: agent.pod("web-1a")["state"] == "captured", 5, "web-1a captured by a real ZDS client")
        uid = agent.pod("web-1a")["uid"]
        assert {15001, 15006, 15008} <= await asyncio.to_thread(listening, lab, "web-1a")
        assert 15001 not in await asyncio.to_thread(listening, lab, "web-1b")
        outbound = manager.pods[uid][1].sockets["outbound"]
        curl = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "meshlet"), "lab", "--id", lab.id, "exec", "web-1a", "--", "curl", "-sS",
            "-m", "3", f"http://{lab.pod('web-2b')['ip']}:8080/",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        conn, peer = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(outbound), 5)
        conn.close()
        assert peer[0] == lab.pod("web-1a")["ip"]
        await curl.wait()
        # The agent restarts: the pod is replayed (keep), its listeners are the same sockets.
        agent.kill(signal.SIGKILL)
        await asyncio.to_thread(agent.start)
        await until(lambda: agent.status()["ztunnel"]["connects"] == 1 and agent.status()["ztunnel"]["served"] == 1,
                    10, "the replay")  # fmt: skip
        assert manager.pods[uid][1].sockets["outbound"] is outbound
        # Unenrolled: ztunnel closes the pod's listeners.
        set_namespace_label(lab, "mesh", ambient=False)
        await until(lambda: uid not in manager.pods, 3, "del_workload")
        assert not {15001, 15006, 15008} & await asyncio.to_thread(listening, lab, "web-1a")
    finally:
        client.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        manager.close()
