"""The mesh end to end on a 2-node lab (iptables backend): agent + ztunnel on every node, control on the host.

Pods: web-1a (mesh, node1), web-1b (plain, node1), web-2a (mesh, node2), web-2b (plain, node2); the
namespace `mesh` is enrolled. Each test asserts what a user sees: bytes and digests, the caller's IP at
the app, what the wire between nodes carries, refusals, and ztunnel's metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import MESHLET, Lab, lab_of, meshlet
from tests.e2e.mesh_helpers import (
    REFUSED,
    capture,
    curl,
    edit_object,
    end,
    get_json,
    logged_after,
    metric,
    packets,
    processes,
    reaches,
    refused,
    remove_policy,
    running,
    slow_download,
    stop,
    url,
    write_object,
    ztunnel_log,
)

WEB_PRINCIPAL = "spiffe://cluster.local/ns/mesh/sa/web"
POLICY_TIMEOUT = 10.0
"""Seconds a store edit may take to reach the proxies (file poll + stream): generous on a loaded CI box."""


@pytest.fixture
def lab(shared_backend_lab: Lab) -> Lab:
    """The whole mesh, once per redirection backend: every test here must hold for both. Tests that only
    read it, or revert what they change, share it (so counters are compared before and after, never from
    zero); those marked `breaks_lab` get their own."""
    return shared_backend_lab


def backend(lab: Lab) -> str:
    return str(lab.status["backend"])


def capture_state(lab: Lab, pod: str) -> str | None:
    """What the pod's node agent says about it: captured, pending, plain, error (None: not listed)."""
    node = lab.pod(pod)["node"]
    socket_path = next(n["agentSocket"] for n in lab.status["nodes"] if n["name"] == node)
    out = subprocess.run(["curl", "-sS", "-m", "2", "--unix-socket", socket_path, "http://agent/v1/status"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return next((p["state"] for p in json.loads(out)["pods"] if p["name"] == pod), None)


def our_iptables_rules(lab: Lab, pod: str) -> list[str]:
    return [line for line in lab.exec(pod, "iptables-save").stdout.splitlines() if "MESHLET" in line]


def test_the_backend_in_use_is_the_one_asked_for(lab: Lab) -> None:
    for node in ("node1", "node2"):
        report = json.loads(meshlet("status", "--lab", lab.id, "--node", node, "-o", "json").stdout)
        assert report["redirect"]["backend"] == backend(lab)
        names = {p["name"] for p in report["bpf"]["programs"]}
        assert names == ({"connect4", "sockops", "inbound", "local_hop"} if backend(lab) == "ebpf" else set())
    for pod in ("web-1a", "web-2a"):
        assert capture_state(lab, pod) == "captured"
        assert bool(our_iptables_rules(lab, pod)) == (backend(lab) == "iptables")  # eBPF: no rule of ours


def test_probes_from_the_node_reach_the_app_directly(lab: Lab) -> None:
    before = metric(lab, "node1", "istio_tcp_connections_opened_total", reporter="destination")
    answer = get_json(lab, "node1", url(lab, "web-1a"))  # from the node: the probe address
    assert answer["peer"].split(":")[0] == lab.status["nodes"][0]["gateway"]
    assert metric(lab, "node1", "istio_tcp_connections_opened_total", reporter="destination") == before
    if backend(lab) == "ebpf":
        report = json.loads(meshlet("status", "--lab", lab.id, "--node", "node1", "-o", "json").stdout)
        maps = {m["name"]: m for m in report["bpf"]["maps"]}
        assert maps["enrolled"]["entries"] == 1 and maps["enrolled"]["maxEntries"] >= 1024


def opened(lab: Lab) -> float:
    """Connections node1's ztunnel opened from web-1a to web-2a: counted when established, so it shows a
    transfer started even when the kernel's socket buffers then hold all of it and the tunnel ends."""
    return metric(lab, "node1", "istio_tcp_connections_opened_total", reporter="source", source_workload="web-1a",
                  destination_workload="web-2a")  # fmt: skip


def vip(lab: Lab, namespace: str = "mesh") -> str:
    service = next(s for s in lab.status["services"] if s["namespace"] == namespace)
    return f"http://{service['vip']}:80"


def test_vip_to_another_node_is_mutual_tls_and_the_app_sees_the_callers_ip(lab: Lab, tmp_path: Path) -> None:
    marker = b"MESHLET-PLAINTEXT-MARKER-" + secrets.token_hex(8).encode()
    body = tmp_path / "body"
    data = (marker + os.urandom(990)) * 1024  # ~1 MB, the marker in every KB
    body.write_bytes(data)
    before = (mtls_out(lab), mtls_in(lab), received(lab))
    answers: list[dict[str, Any]] = []
    with capture(lab, 1, tmp_path / "node1.pcap") as pcap:
        # Round robin over web-1a and web-2a: within a few calls one lands on node2.
        for _ in range(4):
            answers.append(get_json(lab, "web-1a", vip(lab) + "/sha256", "--data-binary", f"@{body}"))
            if answers[-1]["pod"] == "web-2a":
                break
    remote = next(a for a in answers if a["pod"] == "web-2a")
    assert (remote["sha256"], remote["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert remote["peer"].split(":")[0] == lab.pod("web-1a")["ip"]
    wire = pcap.read_bytes()
    assert marker not in wire, "plaintext crossed the link between the nodes"
    summaries = packets(pcap)
    web_2a = lab.pod("web-2a")["ip"]
    assert any(f"> {web_2a}.15008:" in line for line in summaries), "no HBONE traffic to web-2a:15008 captured"
    assert not any(f"{web_2a}.8080" in line for line in summaries), "the app port was reached on the wire"
    assert mtls_out(lab) >= before[0] + 1
    assert mtls_in(lab) >= before[1] + 1
    # Istio's meaning: the upload is what the destination received during the request.
    assert received(lab) - before[2] >= len(data)


def mtls_out(lab: Lab) -> float:
    # The Service's port is HTTP, so node1's ztunnel proxies each request (its upstream HBONE streams are kept
    # alive between requests, so a request need not open a connection): requests are what it counts.
    return metric(lab, "node1", "istio_requests_total", reporter="source", source_workload="web-1a",
                  destination_workload="web-2a", destination_service_name="web", source_principal=WEB_PRINCIPAL,
                  connection_security_policy="mutual_tls")  # fmt: skip


def mtls_in(lab: Lab) -> float:
    return metric(lab, "node2", "istio_requests_total", reporter="destination",
                  source_workload="web-1a", source_principal=WEB_PRINCIPAL,
                  connection_security_policy="mutual_tls")  # fmt: skip


def received(lab: Lab) -> float:
    return metric(lab, "node1", "istio_tcp_received_bytes_total", reporter="source", destination_workload="web-2a")


def test_hbone_port_demands_a_client_certificate_and_shows_the_spiffe_identity(lab: Lab) -> None:
    target = f"{lab.pod('web-2a')['ip']}:15008"
    failed = metric(lab, "node2", "meshlet_connection_errors_total", reason="tls_handshake")
    # web-1b is not enrolled: it reaches 15008 directly, as any outsider could.
    bare = lab.exec("web-1b", "bash", "-c", f"sleep 1 | openssl s_client -connect {target} -alpn h2 2>&1", check=False)
    assert "unexpected eof" in bare.stdout or "alert" in bare.stdout, bare.stdout
    shown = lab.exec("web-1b", "bash", "-c",
                     f"openssl s_client -connect {target} -alpn h2 </dev/null 2>/dev/null"
                     " | openssl x509 -noout -ext subjectAltName").stdout  # fmt: skip
    assert f"URI:{WEB_PRINCIPAL}" in shown
    wait_for(lambda: metric(lab, "node2", "meshlet_connection_errors_total", reason="tls_handshake") > failed, 10,
             "ztunnel to count the failed handshake")  # fmt: skip


def test_deny_policy_refuses_then_removing_it_allows_again_without_restarts(lab: Lab) -> None:
    before = {k: v["pid"] for k, v in processes(lab).items()}
    target = url(lab, "web-2a")
    assert reaches(lab, "web-1a", target)
    denied = metric(lab, "node2", "meshlet_authorization_decisions_total", direction="inbound", decision="deny")
    policy = write_object(lab, {
        "apiVersion": "security.meshlet.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "mesh"}, "spec": {"action": "DENY", "rules": [{}]},
    })  # fmt: skip
    try:
        wait_for(lambda: refused(lab, "web-1a", target), POLICY_TIMEOUT, "the DENY policy to refuse")
        answer = curl(lab, "web-1a", target)
        # A reset, never a clean close (52) or an answer: curl says 56, or 7 when the reset lands before it has
        # read its own connect's completion (ztunnel refuses that fast when the tunnel is pooled).
        assert answer.returncode in (7, 56), answer
        decisions = metric(lab, "node2", "meshlet_authorization_decisions_total", direction="inbound", decision="deny")
        assert decisions >= denied + 1
        policy.unlink()
        wait_for(lambda: reaches(lab, "web-1a", target), POLICY_TIMEOUT, "removing the policy to allow again")
        assert {k: v["pid"] for k, v in processes(lab).items()} == before
        assert all(running(p) for p in processes(lab).values())
    finally:
        remove_policy(lab, policy)


def test_strict_peer_authentication_refuses_plaintext_and_permissive_allows_it(lab: Lab) -> None:
    target = url(lab, "web-2a")
    assert reaches(lab, "web-2b", target)  # PERMISSIVE by default: plaintext from outside the mesh is let in
    strict = {
        "apiVersion": "security.meshlet.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "mesh"}, "spec": {"mtls": {"mode": "STRICT"}},
    }  # fmt: skip
    refusals = metric(lab, "node2", "meshlet_connection_errors_total", reason="strict_mtls")
    policy = write_object(lab, strict)
    try:
        wait_for(lambda: refused(lab, "web-2b", target), POLICY_TIMEOUT, "STRICT to refuse plaintext")
        assert reaches(lab, "web-1a", target)  # mTLS from an enrolled pod is still fine
        assert metric(lab, "node2", "meshlet_connection_errors_total", reason="strict_mtls") >= refusals + 1
        strict["spec"]["mtls"]["mode"] = "PERMISSIVE"
        write_object(lab, strict)
        wait_for(lambda: reaches(lab, "web-2b", target), POLICY_TIMEOUT, "PERMISSIVE to let plaintext in")
        answer = get_json(lab, "web-2b", target)
        assert answer["peer"].split(":")[0] == lab.pod("web-2b")["ip"]
    finally:
        remove_policy(lab, policy)


@pytest.mark.breaks_lab
def test_with_control_stopped_known_pods_keep_talking(lab: Lab) -> None:
    size = 3_000_000
    # A transfer that outlives control: rate-limited so that it is still running when control goes.
    before = opened(lab)
    download = slow_download(lab, "web-1a", url(lab, "web-2a", f"/bytes?n={size}"))
    try:
        wait_for(lambda: opened(lab) > before, 10, "the download to start")
        stop(lab, "control")
        for pod in ("web-2a", "web-1a"):
            assert get_json(lab, "web-1a", url(lab, pod))["pod"] == pod  # new connections, both paths
        assert get_json(lab, "web-2a", url(lab, "web-1a"))["peer"].startswith(lab.pod("web-2a")["ip"] + ":")
        out, err = download.communicate(timeout=30)
    finally:
        end(download)
    assert download.returncode == 0, err
    assert int(out) == size


@pytest.mark.breaks_lab
def test_an_opted_out_pod_talks_plaintext_untouched(lab: Lab, tmp_path: Path) -> None:
    def opt_out(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("labels", {})["meshlet.io/dataplane-mode"] = "none"

    edit_object(lab, "pod.mesh.web-1a.yaml", opt_out)
    wait_for(lambda: capture_state(lab, "web-1a") == "plain", POLICY_TIMEOUT, "web-1a's capture to go")
    assert not our_iptables_rules(lab, "web-1a")
    opened = metric(lab, "node1", "istio_tcp_connections_opened_total", source_workload="web-1a")
    marker = b"OPTED-OUT-PLAINTEXT-" + secrets.token_hex(8).encode()
    (tmp_path / "body").write_bytes(marker * 64)
    with capture(lab, 1, tmp_path / "node1.pcap") as pcap:
        answer = get_json(lab, "web-1a", url(lab, "web-2b", "/sha256"), "--data-binary", f"@{tmp_path / 'body'}")
    assert answer["bytes"] == len(marker) * 64
    assert answer["peer"].split(":")[0] == lab.pod("web-1a")["ip"]
    assert marker in pcap.read_bytes(), "an opted-out pod's traffic should cross the wire as the app sent it"
    assert metric(lab, "node1", "istio_tcp_connections_opened_total", source_workload="web-1a") == opened


@pytest.mark.breaks_lab
def test_ztunnel_killed_means_enrolled_traffic_is_refused_never_sent_in_the_clear(lab: Lab) -> None:
    assert reaches(lab, "web-1a", url(lab, "web-2b"))
    stop(lab, "ztunnel/node1")
    out = curl(lab, "web-1a", url(lab, "web-2b"))
    assert out.returncode == 7, out  # connection refused: the capture stays, nothing listens
    inbound = curl(lab, "web-1b", url(lab, "web-1a"), "--connect-timeout", "2")
    # iptables redirects to a closed port (refused); eBPF answers a SYN it has no listener for with a reset.
    assert inbound.returncode == 7, inbound
    # From an enrolled pod on the other node: its ztunnel's HBONE dial is reset at once, and it says why.
    log = ztunnel_log(lab, "node2")
    offset = log.stat().st_size
    outbound = curl(lab, "web-2a", url(lab, "web-1a"), "-o", "/dev/null", timeout=3)
    assert outbound.returncode in REFUSED, outbound
    line = wait_for(lambda: logged_after(log, offset, lab.pod("web-1a")["ip"]), 5, "the refusal in node2's log")
    assert "ECONNREFUSED" in line, line
    assert reaches(lab, "web-1b", url(lab, "web-2b"))  # pods outside the mesh are not affected


@pytest.mark.breaks_lab
def test_label_flip_moves_new_connections_through_ztunnel_and_back(lab: Lab) -> None:
    app_pids = {k: v["pid"] for k, v in processes(lab).items() if k.startswith("app/")}

    def through_ztunnel() -> float:
        return metric(lab, "node1", "istio_tcp_connections_opened_total", reporter="source",
                      source_workload="web-1a", destination_workload="web-2b")  # fmt: skip

    def label(ambient: bool) -> None:
        def change(obj: dict[str, Any]) -> None:
            labels = obj["metadata"].setdefault("labels", {})
            if ambient:
                labels["meshlet.io/dataplane-mode"] = "ambient"
            else:
                labels.pop("meshlet.io/dataplane-mode", None)

        edit_object(lab, "namespace._.mesh.yaml", change)

    assert reaches(lab, "web-1a", url(lab, "web-2b"))
    counted = wait_for(through_ztunnel, 5, "ztunnel to count web-1a's connection")
    label(False)
    wait_for(lambda: capture_state(lab, "web-1a") == "plain", POLICY_TIMEOUT, "capture to be removed")
    assert not our_iptables_rules(lab, "web-1a")
    assert reaches(lab, "web-1a", url(lab, "web-2b"))
    assert through_ztunnel() == counted  # direct now: ztunnel saw nothing
    label(True)
    wait_for(lambda: capture_state(lab, "web-1a") == "captured", POLICY_TIMEOUT, "capture to come back")
    wait_for(lambda: reaches(lab, "web-1a", url(lab, "web-2b")) and through_ztunnel() > counted, POLICY_TIMEOUT,
             "new connections through ztunnel again")  # fmt: skip
    assert {k: v["pid"] for k, v in processes(lab).items() if k.startswith("app/")} == app_pids


@pytest.mark.breaks_lab
def test_sigterm_drains_while_a_new_ztunnel_takes_over_the_listeners(lab: Lab, tmp_path: Path) -> None:
    old = processes(lab)["ztunnel/node1"]
    size = 1_500_000
    before = opened(lab)
    download = slow_download(lab, "web-1a", url(lab, "web-2a", f"/bytes?n={size}"))
    new: subprocess.Popen[bytes] | None = None
    try:
        # Only the old ztunnel answers metrics until the new one starts (then either may: SO_REUSEPORT).
        wait_for(lambda: opened(lab) > before, 10, "the download to start")
        with open(tmp_path / "ztunnel-new.log", "wb") as log:
            # The upgrade: a second ztunnel with the same arguments binds beside the old one (SO_REUSEPORT).
            new = subprocess.Popen([MESHLET, "lab", "--id", lab.id, "exec", "node1", "--", *old["argv"][3:]],
                                   stdout=log, stderr=log)  # fmt: skip
        wait_for(lambda: "serving" in (tmp_path / "ztunnel-new.log").read_text(), 15, "the new ztunnel to serve pods")
        os.kill(old["pid"], signal.SIGTERM)
        # While the old one drains, new connections are taken by the new one.
        for _ in range(5):
            assert get_json(lab, "web-1a", url(lab, "web-2a"))["pod"] == "web-2a"
        out, err = download.communicate(timeout=30)
        assert download.returncode == 0, err
        assert int(out) == size  # the established connection finished on the draining ztunnel
        wait_for(lambda: not running(old), 15, "the old ztunnel to exit after draining")
        assert new.poll() is None
        assert get_json(lab, "web-1a", url(lab, "web-2b"))["pod"] == "web-2b"
    finally:
        end(download, new)


def test_config_dump_shows_served_pods_certificates_and_config(lab: Lab) -> None:
    assert reaches(lab, "web-1a", url(lab, "web-2a"))  # makes sure web-1a's certificate was used
    dump = json.loads(lab.exec("node1", "curl", "-sS", "-m", "2", "http://127.0.0.1:15000/config_dump").stdout)
    assert dump["node"] == "node1" and dump["ready"] and dump["config"]["connected"]
    pods = {p["name"]: p for p in dump["pods"]}
    assert set(pods) == {"web-1a"}  # enrolled pods of this node only
    assert all(listener["accepting"] for listener in pods["web-1a"]["listeners"].values())
    certs = {c["identity"]: c for c in dump["certificates"]}
    assert certs[WEB_PRINCIPAL]["notAfter"] and certs[WEB_PRINCIPAL]["error"] is None
    assert {w["name"] for w in dump["workloads"]} == {"web-1a", "web-1b", "web-2a", "web-2b"}
    assert {s["name"] for s in dump["services"]} == {"web"}
    assert "PRIVATE KEY" not in json.dumps(dump)
    # Admin is for the node only: it does not answer on the node's network address.
    node_ip = lab.status["nodes"][0]["ip"]
    assert lab.exec("node1", "curl", "-sS", "-m", "2", f"http://{node_ip}:15000/config_dump", check=False).returncode


@pytest.mark.breaks_lab
def test_agent_killed_and_restarted_under_traffic_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    agent = processes(lab)["agent/node1"]
    rules = lab.exec("web-1a", "iptables-save").stdout
    programs = _programs(lab)
    before = opened(lab)
    download = slow_download(lab, "web-1a", url(lab, "web-2a", "/bytes?n=1500000"))
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 (kept for the process's life)
    restarted: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: opened(lab) > before, 10, "the download to start")
        stop(lab, "agent/node1", signal.SIGKILL)
        restarted = subprocess.Popen([MESHLET, "lab", "--id", lab.id, "exec", "node1", "--", *agent["argv"][3:]],
                                     stdout=log, stderr=log)  # fmt: skip
        socket_path = lab.status["nodes"][0]["agentSocket"]

        def agent_status() -> dict[str, Any]:
            out = subprocess.run(["curl", "-sS", "-m", "2", "--unix-socket", socket_path, "http://agent/v1/status"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            result: dict[str, Any] = json.loads(out)
            return result

        wait_for(lambda: {p["name"]: p["state"] for p in agent_status()["pods"]}.get("web-1a") == "captured", 15,
                 "the restarted agent to report web-1a captured")  # fmt: skip
        out, err = download.communicate(timeout=30)
        assert download.returncode == 0 and int(out) == 1_500_000, err
        assert _rules(lab.exec("web-1a", "iptables-save").stdout) == _rules(rules)
        assert _programs(lab) == programs  # eBPF: the same programs stay attached, nothing reloaded
        assert get_json(lab, "web-1a", url(lab, "web-2a"))["peer"].startswith(lab.pod("web-1a")["ip"] + ":")
    finally:
        log.close()
        end(download, restarted)


def _programs(lab: Lab) -> list[tuple[str, int]]:
    report = json.loads(meshlet("status", "--lab", lab.id, "--node", "node1", "-o", "json").stdout)
    return sorted((p["name"], p["id"]) for p in report["bpf"]["programs"])


def _rules(saved: str) -> list[str]:
    return [line for line in saved.splitlines() if line.startswith(("-A", ":MESHLET", "*"))]


@pytest.fixture
def ebpf_lab() -> Iterator[Lab]:
    with lab_of("--redirect", "ebpf") as running:
        running.status["backend"] = "ebpf"
        yield running


def test_local_hop_acceleration_passes_same_node_hops_socket_to_socket(ebpf_lab: Lab, tmp_path: Path) -> None:
    lab = ebpf_lab
    agent = processes(lab)["agent/node1"]
    stop(lab, "agent/node1", signal.SIGTERM)
    with open(tmp_path / "agent.log", "wb") as log:
        restarted = subprocess.Popen([MESHLET, "lab", "--id", lab.id, "exec", "node1", "--", *agent["argv"][3:],
                                      "--local-hop-acceleration"], stdout=log, stderr=log)  # fmt: skip
    try:
        wait_for(lambda: capture_state(lab, "web-1a") == "captured", 15, "the agent to come back")
        data = os.urandom(1_000_000)
        (tmp_path / "body").write_bytes(data)
        answer = get_json(lab, "web-1a", url(lab, "web-2a", "/sha256"), "--data-binary", f"@{tmp_path / 'body'}")
        assert (answer["sha256"], answer["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
        report = json.loads(meshlet("status", "--lab", lab.id, "--node", "node1", "-o", "json").stdout)
        counters = report["bpf"]["counters"]
        assert counters["hops"] >= 2 and counters["shortcut"] >= 1  # both ends of app <-> 15001, data through
    finally:
        end(restarted)
