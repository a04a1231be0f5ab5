"""Package layering: four floors, dependencies pointing down only.

    meshlet (cli, lab)          the CLI and the local cluster: may use everything below, nothing uses it
    agent                       the node agent: the redirection backends, ZDS server, the store reader
    ztunnel | control           the node proxy and the control service: they never import each other
    bpf | meshlet_contracts     eBPF programs and their loader; the contracts every component shares

Checked on the source with `ast`, so a forbidden import fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    # The top: may read a node's agent and ztunnel (status, config_dump), the store, BPF maps.
    "meshlet": {"meshlet", "agent", "bpf", "control", "daemonset", "ztunnel", "meshlet_contracts"},
    # The cluster install's manifests: rendered from the contracts (ports, field lists), no component's code.
    "daemonset": {"daemonset", "meshlet_contracts"},
    # The agent reads the store through control's source and model (the same pipeline control runs) and
    # loads the BPF programs; ZDS, netns, map layouts and ports come from the contracts, never from ztunnel.
    # On Kubernetes it reaches the API server the way control does (`control.kube_client`).
    "agent": {
        "agent",
        "bpf",
        "meshlet_contracts",
        "control.atomic",
        "control.kube_client",
        "control.model",
        "control.sources",
        "control.store",
    },
    "control": {"control", "meshlet_contracts"},
    # ztunnel reads the eBPF backend's original-destination map through the contracts' map layout and
    # bpf() calls, never through the loader (no bcc in the proxy).
    "ztunnel": {"ztunnel", "meshlet_contracts"},
    "bpf": {"bpf", "meshlet_contracts"},
    # The contracts: nothing of any component, or the arrows would run back up.
    "meshlet_contracts": {"meshlet_contracts"},
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` uses a.b.c (a submodule or a name in a.b): judged by that full path.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _ok(name: str, allowed: set[str]) -> bool:
    top = name.split(".")[0]
    if top not in ALLOWED:
        return True  # stdlib or third party
    return any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports(path):
            if not _ok(name, ALLOWED[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("package", "name"),
    [
        ("agent", "ztunnel.inpod.manager"),
        ("ztunnel", "control.store"),
        ("ztunnel", "bpf.loader"),
        ("bpf", "ztunnel.proxy"),
        ("control", "meshlet.cli.main"),
        ("agent", "meshlet.lab.cluster"),
        ("meshlet_contracts", "control.model"),
        ("daemonset", "control.model.security"),
    ],
)
def test_the_rules_refuse_an_import_that_runs_sideways_or_up(package: str, name: str) -> None:
    assert not _ok(name, ALLOWED[package])
