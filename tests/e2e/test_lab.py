"""The local cluster, as a user drives it with `meshlet lab`: pods reach each other across nodes, the
status contract holds, and `down` leaves nothing behind, also after a crash."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, bring_up, leftovers, meshlet, new_lab_id
from tests.e2e.mesh_helpers import metric


@pytest.fixture
def lab(shared_lab: Lab) -> Lab:
    """The shared lab, for the tests that only read it; those that bring labs up and down make their own."""
    return shared_lab


def test_status_json_contract(lab: Lab) -> None:
    st = lab.status
    assert [n["name"] for n in st["nodes"]] == ["node1", "node2"]
    assert all({"name", "ip"} <= n.keys() for n in st["nodes"])
    assert len(st["pods"]) == 4
    for p in st["pods"]:
        assert {"name", "namespace", "node", "ip", "enrolled"} <= p.keys()
        assert p["enrolled"] == (p["namespace"] == "mesh")
        assert p["app"] == "running"
    assert {(p["node"], p["namespace"]) for p in st["pods"]} == {
        (n, ns) for n in ("node1", "node2") for ns in ("mesh", "plain")
    }


def test_pod_reaches_pod_on_other_node_and_app_sees_its_ip(lab: Lab) -> None:
    src = next(p for p in lab.status["pods"] if p["node"] == "node1")
    for dst in (p for p in lab.status["pods"] if p["node"] == "node2"):
        out = lab.exec(src["name"], "curl", "-sS", "-m", "5", f"http://{dst['ip']}:8080/").stdout
        answer = json.loads(out)
        assert answer["pod"] == dst["name"] and answer["node"] == "node2"
        assert answer["peer"].rsplit(":", 1)[0] == src["ip"]


def test_exec_passes_exit_code_and_runs_in_the_pods_cgroup(lab: Lab) -> None:
    proc = lab.exec("plain/web-1b", "sh", "-c", "cat /proc/self/cgroup; exit 7", check=False)
    assert proc.returncode == 7
    assert f"ml-{lab.id}-lab/node1/pods/plain.web-1b" in proc.stdout


def test_exec_on_a_node_and_nodes_have_no_way_out(lab: Lab) -> None:
    routes = lab.exec("node1", "ip", "-j", "route").stdout
    dsts = {r["dst"] for r in json.loads(routes)}
    assert "default" not in dsts  # lab traffic can never leave the machine
    assert lab.status["nodes"][1]["podCIDR"] in dsts


def test_a_pod_coming_and_going_leaves_the_node_bridges_address_alone(lab: Lab) -> None:
    """A veth with the lowest possible MAC joins node1's bridge and leaves again, as a pod's sandbox does:
    the bridge keeps its address (a bridge left to pick one takes its ports' lowest, and the pods' ARP entries
    for their gateway then name a MAC nobody answers: about a minute of lost SYNs), and a pod that had been
    talking reaches the other node at once, every time."""
    src = lab.pod("web-1a")
    dst = lab.pod("web-2a")
    node = src["node"]
    link = f"{lab.id[:6]}brx"

    def bridge_mac() -> str:
        address: str = json.loads(lab.exec(node, "ip", "-j", "link", "show", "br0").stdout)[0]["address"]
        return address

    def answered() -> bool:
        url = f"http://{dst['ip']}:8080/"
        return lab.exec(src["name"], "curl", "-s", "-o", "/dev/null", "-m", "2", url, check=False).returncode == 0

    assert answered()  # the pod's ARP entry for its gateway is fresh
    before = bridge_mac()
    try:
        lab.exec(node, "ip", "link", "add", link, "address", "00:00:00:00:00:01", "type", "veth", "peer", f"{link}p")
        lab.exec(node, "ip", "link", "set", link, "master", "br0", "up")
        assert bridge_mac() == before
    finally:
        lab.exec(node, "ip", "link", "del", link, check=False)
    assert bridge_mac() == before
    assert all(answered() for _ in range(3)), f"{src['name']} lost its way to {dst['name']} after a pod left"


def test_unknown_exec_target_is_named(lab: Lab) -> None:
    proc = lab.exec("web-9z", "true", check=False)
    assert proc.returncode == 1
    assert "no node or pod 'web-9z'" in proc.stderr and "mesh/web-1a" in proc.stderr


def test_down_leaves_nothing_and_is_safe_twice() -> None:
    lab_id = new_lab_id()
    try:
        bring_up(lab_id, nodes=2, pods_per_node=3)
        assert all(leftovers(lab_id)[k] for k in ("netns", "links", "cgroups", "processes", "files"))
    finally:
        first = meshlet("lab", "--id", lab_id, "down")
    assert "removed" in first.stdout
    assert not any(leftovers(lab_id).values()), leftovers(lab_id)
    second = meshlet("lab", "--id", lab_id, "down")
    assert "nothing to remove" in second.stdout


def test_up_after_a_crash_cleans_up_first() -> None:
    lab_id = new_lab_id()
    try:
        lab = bring_up(lab_id)
        # A crash of `up` half-way: processes gone, state file lost, kernel objects still there.
        for pid in map(
            int, Path(f"/sys/fs/cgroup/unified/ml-{lab_id}-lab/node1/pods/mesh.web-1a/cgroup.procs").read_text().split()
        ):
            os.kill(pid, signal.SIGKILL)
        (Path(lab.status["directory"]) / "lab.json").unlink()
        again = bring_up(lab_id)
        assert [p["app"] for p in again.status["pods"]] == ["running"] * 4
        out = again.exec("web-2b", "curl", "-sS", "-m", "5", f"http://{again.pod('web-1a')['ip']}:8080/").stdout
        assert json.loads(out)["pod"] == "web-1a"
    finally:
        meshlet("lab", "--id", lab_id, "down")
    assert not any(leftovers(lab_id).values())


def test_two_labs_side_by_side_do_not_collide() -> None:
    ids = [new_lab_id(), new_lab_id()]
    try:
        with ThreadPoolExecutor(2) as pool:
            labs = list(pool.map(bring_up, ids))
        assert labs[0].status["underlay"] != labs[1].status["underlay"]
        for lab in labs:
            dst = lab.pod("web-2a")["ip"]
            assert (
                json.loads(lab.exec("web-1a", "curl", "-sS", "-m", "5", f"http://{dst}:8080/").stdout)["node"]
                == "node2"
            )
    finally:
        for lab_id in ids:
            meshlet("lab", "--id", lab_id, "down", check=False)
    for lab_id in ids:
        assert not any(leftovers(lab_id).values())


def mtls_opened(lab: Lab, node: str) -> float:
    return metric(lab, node, "istio_tcp_connections_opened_total", reporter="source",
                  connection_security_policy="mutual_tls")  # fmt: skip


def test_demo_reports_every_call(lab: Lab) -> None:
    before = {node: mtls_opened(lab, node) for node in ("node1", "node2")}
    proc = lab.run("demo")
    assert proc.returncode == 0, proc.stderr
    assert f"meshlet lab --id {lab.id} down" in proc.stdout
    report = json.loads(lab.run("demo", "-o", "json").stdout)
    calls = report["calls"]
    assert len(calls) == 12  # 4 pods, each calls the 3 others
    for c in calls:
        assert c["ok"] and c["status"] == 200
        assert c["peerSeen"] == lab.pod(c["from"].split("/")[1])["ip"]
    mesh_to_mesh = [c for c in calls if c["from"].startswith("mesh/") and c["to"].startswith("mesh/")]
    assert len(mesh_to_mesh) == 2 and all(c["security"].startswith("mTLS") for c in mesh_to_mesh)
    # The proxies counted it: two demo runs, one mTLS call out of each node per run.
    by_node = {z["node"]: z for z in report["ztunnels"]}
    assert all(by_node[node]["mutualTls"] >= before[node] + 2 for node in ("node1", "node2")), (before, by_node)
    assert by_node["node1"]["principals"] == ["spiffe://cluster.local/ns/mesh/sa/web"]
