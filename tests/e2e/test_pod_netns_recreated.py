"""A pod whose network namespace is recreated (sandbox restart: same name, same IP, a new netns) is captured
again and served by ztunnel in its new netns, both ways, on a full lab (agent + ztunnel on each node).

The recreation is done by hand with the lab's own kernel helpers and names (the lab's prefix), so
`lab down` removes it like anything else of the lab; the app restarted in the pod is ours and ended by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from meshlet.lab import cluster, kernel, processes
from meshlet.lab.plan import APP_PORT
from tests.conftest import wait_for
from tests.e2e.conftest import Lab, lab_of
from tests.e2e.mesh_helpers import curl, get_json, metric, stop, url
from tests.e2e.mesh_helpers import processes as started_processes

WEB_PRINCIPAL = "spiffe://cluster.local/ns/mesh/sa/web"
RECAPTURE_TIMEOUT = 20.0
"""Seconds for the agent's next resync pass (2 s) to notice, plus ZDS and a certificate, on a loaded box."""


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_of("--redirect", "iptables") as running:
        yield running


def recreate_netns(lab: Lab, pod_name: str) -> processes.Started:
    """Replace the pod's netns by a new one with the same name, veth and IP, and start its app there."""
    state = cluster.load(lab.id)
    pod = next(p for p in state.plan.pods if p.name == pod_name)
    node = state.plan.node(pod.node)
    stop(lab, f"app/{pod.namespace}/{pod.name}")
    # The old netns lives on while the agent and ztunnel hold it: delete the veth explicitly (both ends).
    kernel.ip_batch([f"link delete {pod.node_link}"], netns=node.netns)
    kernel.netns_delete(pod.netns)
    cluster.pod_network(state.plan, pod)
    app = cluster.start_app(state, pod, ".again")
    wait_for(lambda: cluster.http_get(pod.netns, pod.ip, APP_PORT, "/healthz")[0] == 200, 20, "the app again")
    return app


def holds_netns(pid: int, inode: int) -> bool:
    """Whether process `pid` has an fd open on the netns with this inode."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"net:[{inode}]":
                return True
    return False


def mesh_connections(lab: Lab, reporter: str, **labels: str) -> float:
    return metric(lab, "node1", "istio_tcp_connections_opened_total", reporter=reporter,
                  source_principal=WEB_PRINCIPAL, connection_security_policy="mutual_tls", **labels)  # fmt: skip


def test_a_recreated_pod_netns_is_captured_again_and_ztunnel_serves_the_new_one(lab: Lab) -> None:
    netns_path = f"/var/run/netns/{lab.pod('web-1a')['netns']}"
    old_inode = os.stat(netns_path).st_ino
    app = recreate_netns(lab, "web-1a")
    try:
        assert os.stat(netns_path).st_ino != old_inode
        # Out of the new netns: until the agent has re-captured it, calls go direct (uncounted); after,
        # through ztunnel's listener in the new netns. Without one there, captured calls are refused.
        before = mesh_connections(lab, "source", source_workload="web-1a", destination_workload="web-2a")

        def called_through_the_mesh() -> bool:
            return (
                curl(lab, "web-1a", url(lab, "web-2a")).returncode == 0
                and mesh_connections(lab, "source", source_workload="web-1a", destination_workload="web-2a") > before
            )

        wait_for(called_through_the_mesh, RECAPTURE_TIMEOUT, "web-1a's new netns to call out through ztunnel")
        # Into the new netns: node2's ztunnel reaches node1's HBONE listener there, and the app sees the caller.
        before = mesh_connections(lab, "destination", destination_workload="web-1a")
        answer = get_json(lab, "web-2a", url(lab, "web-1a"))
        assert answer["peer"].split(":")[0] == lab.pod("web-2a")["ip"]
        assert mesh_connections(lab, "destination", destination_workload="web-1a") > before
        # The old netns is let go: neither the agent nor ztunnel keeps an fd of it.
        daemons = [started_processes(lab)[key]["pid"] for key in ("agent/node1", "ztunnel/node1")]
        assert not any(holds_netns(pid, old_inode) for pid in daemons)
    finally:
        if processes.is_running(app):
            os.kill(app.pid, signal.SIGKILL)
