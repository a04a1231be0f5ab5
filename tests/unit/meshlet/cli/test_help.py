"""Every command explains itself; bad arguments get a clear error before anything is touched."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from meshlet.cli.main import cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["lab"]),
        (["lab"], ["up", "down", "status", "exec", "demo", "--id"]),
        (["lab", "up"], ["--nodes", "--pods-per-node", "--redirect", "iptables|ebpf|auto"]),
        (["lab", "down"], ["Remove every netns", "twice"]),
        (["lab", "status"], ["-o, --output"]),
        (["lab", "exec"], ["NAME", "COMMAND"]),
        (["lab", "demo"], ["--fresh"]),
        (["lab", "apply"], ["-f, --filename", "kubectl apply"]),
        (["lab", "delete"], ["-f, --filename"]),
        (["lab", "up"], ["--apps"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    for word in expected:
        assert word in result.output


def test_bad_lab_id_is_rejected_with_reason() -> None:
    result = CliRunner().invoke(cli, ["lab", "--id", "Bad_Id", "status"])
    assert result.exit_code == 2
    assert "lab id 'Bad_Id' is invalid" in result.output


def test_bad_redirect_is_rejected() -> None:
    result = CliRunner().invoke(cli, ["lab", "up", "--redirect", "bpf"])
    assert result.exit_code == 2
    assert "'bpf' is not one of" in result.output


def test_a_lab_command_does_not_load_the_kubernetes_client_or_controls_store() -> None:
    """`meshlet lab exec` runs hundreds of times in scripts and tests: importing the Kubernetes client,
    aiohttp and control's store on each call tripled its start-up. Only the commands that use them load them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from meshlet.cli.main import cli\n"
        "result = CliRunner().invoke(cli, ['lab', 'exec', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('kubernetes', 'aiohttp', 'control.store', 'daemonset') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("apply", ["-f, --filename", "kubectl", "meshlet lab apply", "--lab"]),
        ("delete", ["-f, --filename", "kubectl", "--lab"]),
        ("validate", ["-f, --filename", "file, object and field"]),
        ("version", ["--lab", "agent and ztunnel"]),
        ("log-level", ["debug|info|warning|error", "--node", "--component"]),
    ],
)
def test_the_commands_kubectl_and_istioctl_users_look_for_explain_themselves(command: str, expected: list[str]) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    for word in expected:
        assert word in result.output, (command, word)
