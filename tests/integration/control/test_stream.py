"""The config stream against a real control process: changes arrive within a second, broken input is
named and contained, and a restarted control keeps its root while proxies resync."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from tests.integration.control.conftest import ControlProcess, namespace, pod
from ztunnel.config.client import ConfigClient, NodeCredential
from ztunnel.config.state import ConfigRejected, ConfigState

pytestmark = pytest.mark.asyncio


async def until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Wait on the event loop for `condition`, failing with `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def client(control: ControlProcess) -> AsyncIterator[ConfigClient]:
    c = ConfigClient(control.url, NodeCredential.in_dir(control.node_dir("node1")), backoff_max=0.5)
    task = asyncio.create_task(c.run())
    try:
        await until(lambda: c.state.version > 0, 10, "the first snapshot")
        yield c
    finally:
        await c.stop()
        await asyncio.wait_for(task, 10)


def workload(state: ConfigState, name: str) -> dict[str, Any] | None:
    return next((w for w in state.items("workloads").values() if w["name"] == name), None)


async def test_snapshot_on_connect_is_acked(control: ControlProcess, client: ConfigClient) -> None:
    assert workload(client.state, "web-1a") is not None
    assert client.state.epoch == control.status()["epoch"]
    await until(lambda: control.status()["proxies"][0]["ackedVersion"] == client.state.version, 5, "ack")
    assert control.status()["proxies"][0]["node"] == "node1"
    assert control.metric("meshlet_control_connected_proxies") == 1
    # The roots control sent came back in the ack: this ztunnel applies them (control warns of one that does not).
    assert client.state.root_namespaces == ("meshlet-system",)
    assert control.status()["proxies"][0]["rootNamespaces"] == ["meshlet-system"]


async def test_added_pod_reaches_client_within_a_second(control: ControlProcess, client: ConfigClient) -> None:
    control.write("new.yaml", pod("web-1c", "mesh", "node1", "10.1.0.4"))
    await until(lambda: workload(client.state, "web-1c") is not None, 1.0, "the new pod")


async def test_namespace_label_change_reaches_client_within_a_second(
    control: ControlProcess, client: ConfigClient
) -> None:
    assert workload(client.state, "web-1b")["enrolled"] is False  # type: ignore[index]
    control.write("label.yaml", namespace("plain", ambient=True))
    await until(lambda: workload(client.state, "web-1b")["enrolled"] is True, 1.0, "enrollment")  # type: ignore[index]


async def test_added_policy_reaches_client_within_a_second(control: ControlProcess, client: ConfigClient) -> None:
    control.write(
        "policy.yaml",
        {
            "apiVersion": "security.meshlet.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow-mesh", "namespace": "mesh"},
            "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["mesh"]}}]}]},
        },
    )
    await until(lambda: "mesh/allow-mesh" in client.state.items("authorization_policies"), 1.0, "the policy")
    policy = client.state.items("authorization_policies")["mesh/allow-mesh"]
    assert policy["rules"][0]["from"][0]["namespaces"] == ["mesh"]


async def test_broken_yaml_is_named_and_contained(control: ControlProcess, client: ConfigClient) -> None:
    path = control.write("web.yaml", pod("web-1c", "mesh", "node1", "10.1.0.4"))
    await until(lambda: workload(client.state, "web-1c") is not None, 1.0, "the pod")
    path.write_text("kind: Pod\nmetadata: {name: web-1c, namespace: mesh\n  bad: [\n")
    await until(lambda: control.status()["errors"], 2.0, "the error to be reported")
    [error] = control.status()["errors"]
    assert error["origin"] == str(path) and "unreadable YAML" in error["reason"]
    assert f"rejected {path}: unreadable YAML" in control.log()
    # The other objects are served, and the broken file's pod keeps its last good version.
    control.write("more.yaml", pod("web-1d", "mesh", "node1", "10.1.0.5"))
    await until(lambda: workload(client.state, "web-1d") is not None, 1.0, "a later pod")
    assert workload(client.state, "web-1c") is not None
    assert control.metric("meshlet_control_config_errors") == 1


async def test_invalid_object_keeps_its_previous_version(control: ControlProcess, client: ConfigClient) -> None:
    control.write("web.yaml", pod("web-1c", "mesh", "node1", "10.1.0.4"))
    await until(lambda: workload(client.state, "web-1c") is not None, 1.0, "the pod")
    bad = pod("web-1c", "mesh", "node1", "10.1.0.4")
    bad["spec"]["nodeName"] = ["node1"]
    control.write("web.yaml", bad)
    await until(lambda: control.status()["errors"], 2.0, "the error")
    [error] = control.status()["errors"]
    assert error["object"] == "Pod mesh/web-1c" and "spec.nodeName: expected a string" in error["reason"]
    assert workload(client.state, "web-1c")["node"] == "node1"  # type: ignore[index]


async def test_restart_keeps_the_root_and_clients_resync(control: ControlProcess, client: ConfigClient) -> None:
    root = (control.state / "ca" / "root-cert.pem").read_bytes()
    old_epoch = client.state.epoch
    control.kill(signal.SIGKILL)
    control.write("while-down.yaml", pod("web-1e", "mesh", "node1", "10.1.0.6"))
    await until(lambda: not client.connected, 5, "the client to notice")
    assert workload(client.state, "web-1a") is not None  # the last good state is kept meanwhile
    control.start()
    assert (control.state / "ca" / "root-cert.pem").read_bytes() == root
    await until(lambda: client.state.epoch not in ("", old_epoch), 10, "resync with the new control")
    assert client.state.version == control.status()["version"]
    assert workload(client.state, "web-1e") is not None
    assert client.connects == 2


async def test_rejected_version_shows_in_control_metrics_status_and_log(control: ControlProcess) -> None:
    def refuse_web_1c(state: ConfigState) -> None:
        if any(w["name"] == "web-1c" for w in state.items("workloads").values()):
            raise ConfigRejected("workload web-1c: this proxy cannot serve it")

    c = ConfigClient(control.url, NodeCredential.in_dir(control.node_dir("node1")), validate=refuse_web_1c)
    task = asyncio.create_task(c.run())
    try:
        await until(lambda: c.state.version > 0, 10, "the first snapshot")
        held = c.state.version
        control.write("new.yaml", pod("web-1c", "mesh", "node1", "10.1.0.4"))
        await until(lambda: control.metric("meshlet_control_rejects_total", 'node="node1"') >= 1, 2, "the reject")
        assert "cannot serve it" in control.status()["proxies"][0]["lastError"]
        assert "rejected version" in control.log() and "cannot serve it" in control.log()
        assert c.state.version == held and workload(c.state, "web-1c") is None  # last good state kept
    finally:
        await c.stop()
        await asyncio.wait_for(task, 10)


async def test_a_big_snapshot_is_converted_off_the_loop_and_a_small_delta_on_it(control: ControlProcess) -> None:
    """3,000 pods make a snapshot of over a megabyte: the client decodes and converts it in a worker thread, so
    the loop the data path shares is not held for the ~0.3 s that takes; a one-pod delta is applied in place."""
    import threading

    from ztunnel.state.mesh import MeshIndex

    pods = (pod(f"bulk-{i}", "mesh", "node2", f"10.2.{i // 250}.{i % 250 + 1}") for i in range(3000))
    control.write("many.yaml", *pods)
    await until(lambda: control.status()["objects"] >= 3000, 10, "control holding the 3,000 pods")
    threads: list[tuple[int, str]] = []  # (workloads, converting thread) per version, in order

    def validate(state: ConfigState) -> None:
        threads.append((len(state.items("workloads")), threading.current_thread().name))
        MeshIndex.from_config(state)

    c = ConfigClient(control.url, NodeCredential.in_dir(control.node_dir("node1")), backoff_max=0.5, validate=validate)
    task = asyncio.create_task(c.run())
    try:
        await until(lambda: len(c.state.items("workloads")) >= 3000, 30, "the 3,000 pods at the client")
        control.write("one-more.yaml", pod("web-1z", "mesh", "node1", "10.1.0.99"))
        await until(lambda: workload(c.state, "web-1z") is not None, 5, "the one-pod delta")
    finally:
        await c.stop()
        await asyncio.wait_for(task, 10)
    loop_thread = threading.current_thread().name
    (count, snapshot), (_, delta) = threads[0], threads[-1]
    assert count >= 3000 and snapshot != loop_thread, f"the {count}-workload snapshot was converted on the loop"
    assert delta == loop_thread, "a one-pod delta is small: applied in place"
