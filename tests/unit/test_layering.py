"""Package layering (STYLE.md): `meshlet_contracts` is at the bottom and imports no component; ztunnel and
control share only it and the wire schema; agent may use bpf, and control's store, sources and model, and
ztunnel's ZDS schema.

Checked on the source with `ast`, so a forbidden import fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    # The agent reads the store through control's source and model (one way: control never imports
    # agent), speaks ZDS with ztunnel's schema module and enters namespaces with ztunnel's helper.
    "agent": {
        "agent",
        "bpf",
        "meshlet_contracts",
        "control.atomic",
        "control.model",
        "control.sources",
        "control.store",
        "ztunnel.inpod.netns",
        "ztunnel.inpod.protocol",
    },
    # bpf may enter a pod's netns with ztunnel's helper (for netns cookies).
    "bpf": {"bpf", "meshlet_contracts", "ztunnel.inpod.netns"},
    "control": {"control", "meshlet_contracts"},
    # The contracts every component shares: nothing of theirs, or the arrows would run back up.
    "meshlet_contracts": {"meshlet_contracts"},
    # ztunnel reads the eBPF backend's original-destination map: the map's layout and the bpf() calls,
    # never the loader (no bcc in the proxy).
    "ztunnel": {"ztunnel", "meshlet_contracts", "control.wire", "bpf.maps", "bpf.syscall"},
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
