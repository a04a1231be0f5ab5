"""The rendered install runs: each container's command and arguments, as the manifests give them, are accepted by
the component they start, and control started that way serves a cluster (the test API server).

The image cannot be built here, so what Kubernetes would run is run as a process instead: `$(VAR)` references
are expanded from the container's env as the kubelet does, control's listen ports are moved to free loopback ports
(the only change), and it reaches the API server through KUBECONFIG as it would through its in-cluster
ServiceAccount.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.main import parser as agent_parser
from daemonset.render import render
from daemonset.values import Values
from tests.conftest import wait_for
from tests.integration.control.conftest import free_port
from tests.kubeapi import KubeApiServer
from ztunnel.main import credential_problem
from ztunnel.main import parser as ztunnel_parser

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback directly, whatever http_proxy the environment sets."""
ENV = {"NODE_NAME": "node-a", "HOST_IP": "10.0.0.7", "POD_NAMESPACE": "meshlet-system"}


def _containers(kind: str) -> dict[str, dict[str, Any]]:
    [workload] = [o for o in render(Values()) if o["kind"] == kind]
    return {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}


def _expand(args: list[str]) -> list[str]:
    """What the kubelet does with `$(NAME)` in args: the container's env value."""
    return [re.sub(r"\$\((\w+)\)", lambda m: ENV[m.group(1)], a) for a in args]


def test_the_daemonsets_arguments_are_the_agents_and_ztunnels() -> None:
    containers = _containers("DaemonSet")
    for name, parse in (("agent", agent_parser), ("ztunnel", ztunnel_parser)):
        assert containers[name]["command"] == ["python", "-m", name]
        parse().parse_args(_expand(containers[name]["args"]))  # exits (SystemExit) on an unknown flag
    agent = agent_parser().parse_args(_expand(containers["agent"]["args"]))
    assert (agent.source, agent.node) == ("kubernetes", "node-a")
    ztunnel = ztunnel_parser().parse_args(_expand(containers["ztunnel"]["args"]))
    assert ztunnel.credentials is None and ztunnel.token is not None and ztunnel.root_cert is not None
    # What it reads is what the pod mounts: the projected token and the root ConfigMap.
    mounts = {m["mountPath"] for m in containers["ztunnel"]["volumeMounts"]}
    assert str(ztunnel.token.parent) in mounts and str(ztunnel.root_cert.parent) in mounts


def test_ztunnel_with_the_manifests_files_missing_says_which(tmp_path: Path) -> None:
    args = ztunnel_parser().parse_args(_expand(_containers("DaemonSet")["ztunnel"]["args"]))
    problem = credential_problem(args)
    assert problem is not None and str(args.token) in problem


def _get(url: str) -> tuple[int, Any]:
    """(status, the body: JSON decoded when it is JSON)."""
    try:
        with DIRECT.open(url, timeout=2) as resp:
            body = resp.read()
            is_json = resp.headers.get_content_type() == "application/json"
            return resp.status, json.loads(body) if is_json else body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


@pytest.mark.timeout(120)
def test_control_runs_with_the_deployments_arguments(tmp_path: Path) -> None:
    [container] = _containers("Deployment").values()
    assert container["command"] == ["python", "-m", "control"]
    args = _expand(container["args"])
    config, ops = free_port(), free_port()
    moved = {"0.0.0.0:15012": f"127.0.0.1:{config}", "0.0.0.0:15014": f"127.0.0.1:{ops}"}
    args = [moved.get(a, a) for a in args]
    assert set(moved.values()) <= set(args), args
    state = args[args.index("--state") + 1]
    args[args.index("--state") + 1] = str(tmp_path / state.lstrip("/"))  # the emptyDir
    with KubeApiServer() as api:
        api.core_v1().create_namespace({"metadata": {"name": "meshlet-system"}})
        env = {**os.environ, **ENV, "KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig"))}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = open(tmp_path / "control.log", "wb")  # noqa: SIM115 (handed to the process)
        proc = subprocess.Popen([sys.executable, "-m", "control", *args], env=env, stdout=log, stderr=log)
        log.close()
        try:
            try:
                wait_for(lambda: _get(f"http://127.0.0.1:{ops}/ready")[0] == 200, 30, "control ready")
            except AssertionError as exc:  # say why: control's own account
                log_text = (tmp_path / "control.log").read_text()[-3000:]
                raise AssertionError(f"{exc}; control's log:\n{log_text}") from None
            status = _get(f"http://127.0.0.1:{ops}/debug/status")[1]
            assert status["source"] == "kubernetes" and status["synced"]
            root = wait_for(
                lambda: _configmap(api), 15, "the meshlet-root-cert ConfigMap in the namespace from POD_NAMESPACE"
            )
            assert root.startswith("-----BEGIN CERTIFICATE-----")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert "Traceback" not in (tmp_path / "control.log").read_text()


def _configmap(api: KubeApiServer) -> str | None:
    try:
        cm = api.core_v1().read_namespaced_config_map("meshlet-root-cert", "meshlet-system")
    except Exception:  # not there yet (the client raises ApiException 404)
        return None
    data: str | None = (cm.data or {}).get("root-cert.pem")
    return data
