"""The iptables backend in a real pod netns: traffic lands where it should, rules never duplicate,
drift is seen and repaired, removal leaves only what was there before."""

from __future__ import annotations

import secrets
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.redirect.iptables import InpodSettings, IptablesBackend
from meshlet_contracts.netns import entered
from meshlet_contracts.ports import ZTUNNEL_MARK

SO_ORIGINAL_DST = 80


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@dataclass
class PodNet:
    """A pod netns (10.99.0.2) behind a node netns (10.99.0.1 = probe address, 10.99.0.3 = another peer)."""

    pod: str
    node: str

    @property
    def pod_path(self) -> Path:
        return Path("/var/run/netns") / self.pod

    def save(self) -> str:
        return "\n".join(
            line
            for line in sh("ip", "netns", "exec", self.pod, "iptables-save").splitlines()
            if not line.startswith("#")
        )


@pytest.fixture
def podnet() -> Iterator[PodNet]:
    run_id = secrets.token_hex(3)
    net = PodNet(pod=f"ml-r{run_id}-pod", node=f"ml-r{run_id}-node")
    try:
        sh("ip", "netns", "add", net.pod)
        sh("ip", "netns", "add", net.node)
        sh("ip", "-n", net.node, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", net.pod)
        for cmd in (
            f"-n {net.node} addr add 10.99.0.1/24 dev veth0",
            f"-n {net.node} addr add 10.99.0.3/24 dev veth0",
            f"-n {net.node} link set veth0 up",
            f"-n {net.node} link set lo up",
            f"-n {net.pod} addr add 10.99.0.2/24 dev eth0",
            f"-n {net.pod} link set eth0 up",
            f"-n {net.pod} link set lo up",
            f"-n {net.pod} route add default via 10.99.0.1",
        ):
            sh("ip", *cmd.split())
        yield net
    finally:
        for ns in (net.pod, net.node):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def listener(netns: str, port: int) -> socket.socket:
    with entered(Path("/var/run/netns") / netns):
        s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)
    s.settimeout(3)
    return s


def connect(netns: str, dst: tuple[str, int], src: str | None = None, mark: int | None = None) -> socket.socket:
    with entered(Path("/var/run/netns") / netns):
        s = socket.socket()
    if mark is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    if src:
        s.bind((src, 0))
    s.settimeout(3)
    s.connect(dst)
    return s


def original_dst(conn: socket.socket) -> tuple[str, int]:
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


def backend() -> IptablesBackend:
    return IptablesBackend(InpodSettings(probe_ip="10.99.0.1"))


def test_outbound_goes_to_15001_with_its_original_destination(podnet: PodNet) -> None:
    backend().install(podnet.pod_path)
    with listener(podnet.pod, 15001) as ztunnel, connect(podnet.pod, ("10.99.0.3", 80)):
        conn, _ = ztunnel.accept()
        with conn:
            assert original_dst(conn) == ("10.99.0.3", 80)


def test_ztunnels_own_marked_traffic_is_not_captured(podnet: PodNet) -> None:
    backend().install(podnet.pod_path)
    with listener(podnet.node, 9090) as upstream, listener(podnet.pod, 15001) as ztunnel:
        with connect(podnet.pod, ("10.99.0.3", 9090), mark=ZTUNNEL_MARK):
            conn, _ = upstream.accept()  # went straight out, not to 15001
            conn.close()
        ztunnel.settimeout(0.2)
        with pytest.raises(TimeoutError):
            ztunnel.accept()


def test_inbound_goes_to_15006_but_probes_and_hbone_do_not(podnet: PodNet) -> None:
    backend().install(podnet.pod_path)
    with (
        listener(podnet.pod, 15006) as inbound,
        listener(podnet.pod, 8080) as app,
        listener(podnet.pod, 15008) as hbone,
    ):
        with connect(podnet.node, ("10.99.0.2", 8080), src="10.99.0.3"):
            conn, peer = inbound.accept()
            with conn:
                assert original_dst(conn) == ("10.99.0.2", 8080) and peer[0] == "10.99.0.3"
        with connect(podnet.node, ("10.99.0.2", 8080), src="10.99.0.1"):
            conn, _ = app.accept()  # kubelet's probe reaches the app itself
            conn.close()
        with connect(podnet.node, ("10.99.0.2", 15008), src="10.99.0.3"):
            conn, _ = hbone.accept()
            conn.close()


def test_install_twice_changes_nothing_and_duplicates_nothing(podnet: PodNet) -> None:
    b = backend()
    assert b.install(podnet.pod_path) is True
    first = podnet.save()
    assert b.install(podnet.pod_path) is False
    assert podnet.save() == first
    assert first.count("-A OUTPUT -j MESHLET_OUTPUT") == 2  # once in mangle, once in nat
    assert b.drift(podnet.pod_path) == []


def test_drift_is_reported_and_repaired(podnet: PodNet) -> None:
    b = backend()
    b.install(podnet.pod_path)
    first = podnet.save()
    sh("ip", "netns", "exec", podnet.pod, "iptables", "-t", "nat", "-D", "MESHLET_OUTPUT", "-o", "lo", "-j", "RETURN")
    sh("ip", "netns", "exec", podnet.pod, "iptables", "-t", "nat", "-A", "OUTPUT", "-j", "MESHLET_OUTPUT")
    [a, b2] = b.drift(podnet.pod_path)
    assert "nat/MESHLET_OUTPUT" in a and "nat/OUTPUT" in b2
    assert b.install(podnet.pod_path) is True
    assert podnet.save() == first


def test_istio_rules_stay_first_and_untouched(podnet: PodNet) -> None:
    ipt = ("ip", "netns", "exec", podnet.pod, "iptables", "-t", "nat")
    sh(*ipt, "-N", "ISTIO_OUTPUT")
    sh(*ipt, "-A", "ISTIO_OUTPUT", "-p", "tcp", "-j", "RETURN")
    sh(*ipt, "-A", "OUTPUT", "-j", "ISTIO_OUTPUT")
    b = backend()
    b.install(podnet.pod_path)
    nat_output = [line for line in podnet.save().splitlines() if line.startswith("-A OUTPUT")]
    assert nat_output[-2:] == ["-A OUTPUT -j ISTIO_OUTPUT", "-A OUTPUT -j MESHLET_OUTPUT"]
    b.remove(podnet.pod_path)
    saved = podnet.save()
    assert "MESHLET" not in saved
    assert "-A OUTPUT -j ISTIO_OUTPUT" in saved and "-A ISTIO_OUTPUT -p tcp -j RETURN" in saved


def test_remove_leaves_nothing_and_is_safe_twice(podnet: PodNet) -> None:
    b = backend()
    b.install(podnet.pod_path)
    assert "32764" in sh("ip", "-n", podnet.pod, "rule")
    b.remove(podnet.pod_path)
    b.remove(podnet.pod_path)
    assert "MESHLET" not in podnet.save()
    assert "32764" not in sh("ip", "-n", podnet.pod, "rule")
    assert sh("ip", "-n", podnet.pod, "route", "show", "table", "100") == ""
