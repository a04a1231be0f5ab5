"""`meshlet install`: `--dry-run` prints exactly the rendered manifests; without a cluster to reach the command says
how to name one; a bad `--set` is a usage error naming the key; a render failing our lint is refused. The agent's
probe command is run as a process against a real status socket. Applying to a cluster: tests/integration/cli."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from agent.status import serve_status
from daemonset import Values, render
from daemonset.node import STATUS_PROBE, STATUS_SOCKET
from meshlet.cli.main import cli


def test_dry_run_prints_the_rendered_manifests_as_yaml_documents() -> None:
    result = CliRunner().invoke(cli, ["install", "--dry-run", "--set", "redirect=iptables"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("---\n")
    assert list(yaml.safe_load_all(result.output)) == render(Values().with_sets(["redirect=iptables"]))


def test_without_a_cluster_it_says_how_to_name_one_and_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["install"])
    assert result.exit_code == 1
    assert "cannot reach a Kubernetes cluster" in result.output
    assert "Pass --kubeconfig PATH or set KUBECONFIG" in result.output
    assert "apiVersion" not in result.output
    missing = tmp_path / "nope"
    result = CliRunner().invoke(cli, ["install", "--kubeconfig", str(missing)])
    assert result.exit_code == 1 and f"kubeconfig {missing}" in result.output


def test_a_render_failing_the_lint_is_refused_naming_object_container_and_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import daemonset

    def broken(values: Values) -> list[dict[str, Any]]:
        objects = render(values)
        for obj in objects:
            if obj["kind"] == "DaemonSet":
                del obj["spec"]["template"]["spec"]["containers"][1]["livenessProbe"]
        return objects

    monkeypatch.setattr(daemonset, "render", broken)
    result = CliRunner().invoke(cli, ["install", "--dry-run"])
    assert result.exit_code == 1
    assert "DaemonSet/meshlet-system/meshlet-node container ztunnel: [probes] no livenessProbe" in result.output
    assert "apiVersion" not in result.output


def test_a_bad_set_is_a_usage_error_naming_the_key() -> None:
    result = CliRunner().invoke(cli, ["install", "--dry-run", "--set", "redirect=nft"])
    assert result.exit_code == 2
    assert "--set redirect=nft: expected one of auto, ebpf, iptables" in result.output


async def probe(socket: Path) -> int:
    command = STATUS_PROBE.replace(STATUS_SOCKET, str(socket))
    assert command != STATUS_PROBE
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.asyncio
async def test_the_agent_probe_passes_only_while_the_agent_answers_on_its_status_socket(tmp_path: Path) -> None:
    socket = tmp_path / "agent.sock"
    assert await probe(socket) != 0  # no agent
    runner = await serve_status(socket, lambda: {"node": "node-1"})
    try:
        assert await probe(socket) == 0
    finally:
        await runner.cleanup()
    assert await probe(socket) != 0


def test_help_names_the_options() -> None:
    result = CliRunner().invoke(cli, ["install", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for word in ("--dry-run", "--set", "redirect (auto|ebpf|iptables)", "caSecret", "--kubeconfig"):
        assert word in text


ROOT = Path(__file__).resolve().parents[3]


def test_the_dockerfile_copies_every_package_the_image_installs() -> None:
    """`pip install .` in the image sees only what was copied: a package missing there is missing at run time."""
    text = (ROOT / "pyproject.toml").read_text()
    include = text.split("[tool.setuptools.packages.find]", 1)[1].split("]", 1)[0]
    packages = {name.rstrip("*").removesuffix(".") for name in include.split('"')[1::2] if not name.endswith(".*")}
    copied = {
        line.split()[1] for line in (ROOT / "daemonset/Dockerfile").read_text().splitlines() if line.startswith("COPY ")
    }
    assert packages <= copied, packages - copied


@pytest.mark.parametrize("command", [["agent", "--help"], ["ztunnel", "--help"], ["control", "serve", "--help"]])
@pytest.mark.asyncio
async def test_each_containers_command_runs_as_a_process(command: list[str]) -> None:
    """The manifests' `python -m agent|ztunnel|control`: the modules start and read their arguments."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"usage: python -m" in out
