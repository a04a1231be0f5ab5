"""`meshlet status|check|workloads|services|policies|certs|connections|label` against a live lab,
asserting on their JSON output (the contract scripts rely on)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import MESHLET, Lab, meshlet
from tests.e2e.mesh_helpers import end, get_json, hold_connection, reaches, remove_policy, stop, url, write_object

WEB = "spiffe://cluster.local/ns/mesh/sa/web"


@pytest.fixture
def lab(shared_lab: Lab) -> Lab:
    """The shared lab, for the tests that only read it (or remove what they add); `breaks_lab` ones get their own."""
    return shared_lab


def cli_json(lab: Lab, *args: str, ok: bool = True) -> Any:
    proc = meshlet(*args, "--lab", lab.id, "-o", "json", check=False)
    assert (proc.returncode == 0) == ok, f"meshlet {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


def test_status_reports_a_healthy_node(lab: Lab) -> None:
    assert reaches(lab, "web-1a", url(lab, "web-2a"))
    report = cli_json(lab, "status", "--node", "node1")
    assert report["healthy"] and report["problems"] == []
    assert report["node"] == "node1" and report["lab"] == lab.id
    # The lab asks for auto: this machine runs eBPF, and status says why that one was picked.
    assert report["redirect"]["backend"] == "ebpf" and report["redirect"]["reason"].startswith("auto: eBPF works")
    assert report["agent"]["ok"] and report["agent"]["store"]["synced"]
    assert report["ztunnel"]["ready"] and report["ztunnel"]["servedPods"] == 1
    assert report["control"]["connected"] and report["control"]["configVersion"] >= 1
    assert report["control"]["configAgeSeconds"] >= 0
    assert report["pods"] == {"total": 2, "enrolled": 1, "captured": 1, "pending": 0, "errors": []}
    assert report["certificates"]["count"] == 1 and report["certificates"]["soonestExpiry"]
    assert report["traffic"]["source"]["connections"] >= 1
    attached = {p["name"]: p["attach"] for p in report["bpf"]["programs"]}
    assert set(attached) == {"connect4", "sockops", "inbound", "local_hop"}
    assert attached["connect4"].endswith("/node1/pods")
    human = meshlet("status", "--lab", lab.id, "--node", "node2").stdout
    assert "node2" in human and "ready" in human


def test_status_without_a_node_reports_the_whole_lab(lab: Lab) -> None:
    report = cli_json(lab, "status")
    assert report["lab"] == lab.id and report["healthy"] and report["problems"] == []
    assert [n["node"] for n in report["nodes"]] == ["node1", "node2"]
    assert all(n["ztunnel"]["ready"] and n["agent"]["ok"] for n in report["nodes"])
    human = meshlet("status", "--lab", lab.id).stdout
    assert "node1" in human and "node2" in human and f"{lab.id}: 2 nodes, healthy" in human


@pytest.mark.breaks_lab
def test_status_exits_non_zero_and_names_the_problem_when_ztunnel_is_stopped(lab: Lab) -> None:
    stop(lab, "ztunnel/node2", signal.SIGKILL)
    report = cli_json(lab, "status", "--node", "node2", ok=False)
    assert not report["healthy"]
    assert any("ztunnel's admin did not answer" in p and "node2" in p for p in report["problems"])
    # The agent notices too: ZDS has nobody connected, and the node's pods wait.
    wait_for(lambda: any("no ztunnel connected" in p for p in cli_json(lab, "status", "--node", "node2",
                                                                           ok=False)["problems"]), 10,
             "the agent to report ztunnel gone")  # fmt: skip
    human = meshlet("status", "--lab", lab.id, "--node", "node2", check=False)
    assert human.returncode == 1 and "problem:" in human.stdout
    assert cli_json(lab, "status", "--node", "node1")["healthy"]  # the other node is fine


def test_missing_agent_names_the_socket_tried(lab: Lab, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sock"
    proc = meshlet("status", "--agent-socket", str(missing), check=False)
    assert proc.returncode == 1
    assert str(missing) in proc.stdout and "is it running" in proc.stdout
    bad_node = meshlet("status", "--lab", lab.id, "--node", "node9", check=False)
    assert bad_node.returncode == 1 and "node1, node2" in bad_node.stderr


def test_status_lists_every_store_error_with_its_file_and_object(lab: Lab) -> None:
    store = Path(lab.status["store"])
    broken = {
        store / "broken-policy.yaml": "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: bad, namespace: mesh}\nspec: {action: MAYBE}\n",
        store / "broken-yaml.yaml": "kind: Service\nmetadata: {name: [unclosed\n",
    }
    try:
        for path, text in broken.items():
            path.with_suffix(".tmp").write_text(text)
            path.with_suffix(".tmp").replace(path)

        def both_reported() -> Any:
            report = cli_json(lab, "status", "--node", "node2", ok=False)
            problems = [p for p in report["problems"] if p.startswith("invalid in the store (control): ")]
            return report if len(problems) == 2 else None

        report = wait_for(both_reported, 10, "both files' errors in meshlet status")
        problems = "\n".join(report["problems"])
        assert "broken-policy.yaml: AuthorizationPolicy mesh/bad: spec.action: unknown action 'MAYBE'" in problems
        assert "broken-yaml.yaml" in problems and "unreadable YAML" in problems
        assert report["store"]["seenBy"] == "control" and len(report["store"]["errors"]) == 2
        human = meshlet("status", "--lab", lab.id, "--node", "node2", check=False)
        assert human.returncode == 1 and human.stdout.count("invalid in the store") == 2
    finally:
        for path in broken:
            path.unlink(missing_ok=True)
    wait_for(lambda: cli_json(lab, "status", "--node", "node2")["healthy"], 10, "the errors to go with the files")


def test_version_asks_control_and_every_nodes_agent_and_ztunnel(lab: Lab) -> None:
    report = cli_json(lab, "version")
    cli = report["cli"]
    assert report["lab"] == lab.id and report["control"] == cli  # one installation: the same build everywhere
    assert report["nodes"] == {node: {"agent": cli, "ztunnel": cli} for node in ("node1", "node2")}
    table = meshlet("version", "--lab", lab.id).stdout
    assert table.count(cli["version"]) == 6  # the CLI, control, and two parts on each of two nodes


def test_log_level_changes_agents_and_ztunnels_at_runtime(lab: Lab) -> None:
    try:
        report = cli_json(lab, "log-level", "debug", "--node", "node1")
        assert report == {"level": "debug", "nodes": {"node1": {"agent": {"level": "debug"},
                                                               "ztunnel": {"level": "debug"}}}}  # fmt: skip
        # ztunnel says so in its log, and its admin port reads the level back; node2 kept its own.
        log = Path(lab.status["directory"]) / "logs" / "ztunnel-node1.log"
        assert "log level set to debug through the admin port" in log.read_text()
        asked = "curl", "-sS", "-m", "2", "-X", "POST", "http://127.0.0.1:15000/logging"
        assert lab.exec("node1", *asked).stdout.splitlines()[0] == "level: debug"
        assert lab.exec("node2", *asked).stdout.splitlines()[0] == "level: info"
    finally:
        whole = cli_json(lab, "log-level", "info")
    assert {a["level"] for parts in whole["nodes"].values() for a in parts.values()} == {"info"}
    assert set(whole["nodes"]) == {"node1", "node2"}
    refused = meshlet("log-level", "loud", "--lab", lab.id, check=False)
    assert refused.returncode == 2 and "'loud' is not one of" in refused.stderr


def test_apply_and_delete_put_a_policy_in_and_out_of_the_labs_store(lab: Lab, tmp_path: Path) -> None:
    manifest = tmp_path / "deny.yaml"
    manifest.write_text("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                        "metadata: {name: deny-9999, namespace: mesh}\n"
                        "spec: {action: DENY, rules: [{to: [{operation: {ports: ['9999']}}]}]}\n")  # fmt: skip
    try:
        assert "created" in meshlet("apply", "-f", str(manifest), "--lab", lab.id).stdout
        wait_for(lambda: [p["name"] for p in cli_json(lab, "policies", "-n", "mesh")] == ["deny-9999"], 10,
                 "the policy at node1's ztunnel")  # fmt: skip
        assert "unchanged" in meshlet("apply", "-f", str(manifest), "--lab", lab.id).stdout
    finally:
        gone = meshlet("delete", "-f", str(manifest), "--lab", lab.id, check=False)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    wait_for(lambda: cli_json(lab, "policies", "-n", "mesh") == [], 10, "the policy gone from node1's ztunnel")
    missing = meshlet("delete", "-f", str(manifest), "--lab", lab.id, check=False)
    assert missing.returncode == 1 and "not found" in missing.stdout


def test_check_passes_on_a_healthy_lab_node(lab: Lab) -> None:
    data = cli_json(lab, "check", "--node", "node2")
    assert data["ok"]
    names = {c["name"] for g in data["groups"] for c in g["checks"]}
    assert {"cgroup v2", "bpffs", "bcc", "kernel headers for bcc", "iptables usable", "agent socket",
            "ztunnel ready", "CA trust", "clock"} <= names  # fmt: skip


def test_inspection_commands_show_the_mesh_as_json(lab: Lab) -> None:
    policy = write_object(lab, {
        "apiVersion": "security.meshlet.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-mesh", "namespace": "mesh"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["mesh"]}}]}]},
    })  # fmt: skip
    try:
        wait_for(lambda: cli_json(lab, "policies", "--node", "node2"), 10, "the policy to reach ztunnel")
        workloads = cli_json(lab, "workloads", "--node", "node2")
        assert {w["name"] for w in workloads} == {"web-1a", "web-1b", "web-2a", "web-2b"}
        assert {w["name"] for w in cli_json(lab, "workloads", "-n", "mesh", "--on", "node2")} == {"web-2a"}
        mine = next(w for w in workloads if w["name"] == "web-2a")
        assert mine["identity"] == WEB and mine["enrolled"] and mine["node"] == "node2"
        services = cli_json(lab, "services", "-n", "mesh")
        assert len(services) == 1 and services[0]["ports"] == [80]
        mesh_ips = sorted(lab.pod(p)["ip"] for p in ("web-1a", "web-2a"))
        assert sorted(e["ip"] for e in services[0]["endpoints"]) == mesh_ips
        policies = cli_json(lab, "policies", "--node", "node2")
        [row] = policies
        assert {k: row[k] for k in ("kind", "name", "namespace", "selector", "action", "ruleCount", "needsL7")} == {
            "kind": "AuthorizationPolicy", "name": "allow-mesh", "namespace": "mesh", "selector": None,
            "action": "ALLOW", "ruleCount": 1, "needsL7": False}  # fmt: skip
        assert row["scope"] == "namespace mesh"
        assert row["enforcedBy"] == "the destination's ztunnel, per connection (L4)"
        assert len(row["rules"]) == 1 and "mesh" in json.dumps(row["rules"])  # the rules themselves
        wide = {**os.environ, "COLUMNS": "200"}  # a wide terminal: the cells do not wrap
        table = subprocess.run([MESHLET, "policies", "--lab", lab.id, "--node", "node2"], capture_output=True,
                               text=True, env=wide, timeout=60, check=True).stdout  # fmt: skip
        assert "namespace mesh" in table and "the destination's ztunnel, per connection (L4)" in table
        certs = cli_json(lab, "certs", "--node", "node2")
        chain = [(c["identity"], c["role"], c["state"]) for c in certs]
        assert chain == [(WEB, "leaf", "valid"), (WEB, "root", "valid")]
        assert certs[0]["notAfter"] and certs[0]["serial"] and certs[0]["error"] is None
        # A connection held open shows up while it lasts.
        slow = hold_connection(lab, "web-1a", lab.pod("web-2a")["ip"], 8080, 30)
        try:
            conns = wait_for(lambda: cli_json(lab, "connections", "--node", "node1"), 10, "an open connection")
            assert conns[0]["direction"] == "outbound" and lab.pod("web-2a")["ip"] in conns[0]["connection"]
            assert (conns[0]["source"], conns[0]["destination"]) == ("mesh/web-1a", "mesh/web-2a")
            assert conns[0]["destinationIdentity"] == WEB
            yaml_out = meshlet("connections", "--lab", lab.id, "-o", "yaml").stdout
            assert "direction: outbound" in yaml_out
        finally:
            end(slow)
    finally:
        remove_policy(lab, policy)


@pytest.mark.breaks_lab
def test_label_namespace_enrolls_and_releases_a_namespace(lab: Lab) -> None:
    meshlet("label", "namespace", "plain", "meshlet.io/dataplane-mode=ambient", "--lab", lab.id)
    wait_for(lambda: cli_json(lab, "status", "--node", "node1")["pods"]["captured"] == 2, 10, "web-1b captured")
    answer = get_json(lab, "web-1b", url(lab, "web-2a"))
    assert answer["peer"].startswith(lab.pod("web-1b")["ip"] + ":")
    meshlet("label", "namespace", "plain", "meshlet.io/dataplane-mode-", "--lab", lab.id)
    wait_for(lambda: cli_json(lab, "status", "--node", "node1")["pods"]["enrolled"] == 1, 10, "web-1b released")
    bad = meshlet("label", "namespace", "plain", "not a label", "--lab", lab.id, check=False)
    assert bad.returncode == 1 and "KEY=VALUE" in bad.stderr
    missing = meshlet("label", "namespace", "nope", "a=b", "--lab", lab.id, check=False)
    assert missing.returncode == 1 and "no Namespace 'nope'" in missing.stderr
