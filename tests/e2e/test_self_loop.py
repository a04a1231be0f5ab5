"""ztunnel's own ports are never a destination: a connection to them is refused at once, counted, and
costs no more than itself (on 9ab7a9e one such curl looped through ztunnel ~10,000 times in 3 s)."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import Lab
from tests.e2e.mesh_helpers import curl, metric, processes, reaches, url


@pytest.fixture
def lab(shared_backend_lab: Lab) -> Lab:
    """The shared lab of each backend: refused calls change nothing in it (counters compared before and after)."""
    return shared_backend_lab


def fds(lab: Lab, node: str) -> int:
    return len(os.listdir(f"/proc/{processes(lab)[f'ztunnel/{node}']['pid']}/fd"))


def test_a_call_to_a_ztunnel_port_of_an_enrolled_pod_is_refused_without_a_loop(lab: Lab) -> None:
    assert reaches(lab, "web-1a", url(lab, "web-2a"))
    before = {node: fds(lab, node) for node in ("node1", "node2")}
    loops = metric(lab, "node1", "meshlet_connection_errors_total", direction="outbound", reason="self_loop")
    for port in (15001, 15006, 15008):
        for caller, target in (("web-1b", "web-1a"), ("web-1a", "web-2a"), ("web-2b", "web-1a")):
            out = curl(lab, caller, f"http://{lab.pod(target)['ip']}:{port}/", timeout=5)
            # Refused, reset or an empty/garbled answer (15008 is TLS): never a hang, never an app's reply.
            assert out.returncode in (7, 35, 52, 56), (port, caller, target, out)
    after = {node: fds(lab, node) for node in ("node1", "node2")}
    assert all(after[n] < before[n] + 20 for n in after), (before, after)
    # The mesh caller's own ztunnel refuses it before anything leaves the node.
    refused = metric(lab, "node1", "meshlet_connection_errors_total", direction="outbound", reason="self_loop")
    assert refused >= loops + 1
    assert reaches(lab, "web-1a", url(lab, "web-2a"))  # and the node serves on
