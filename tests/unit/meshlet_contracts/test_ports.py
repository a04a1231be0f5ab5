"""The node constants are defined once (meshlet_contracts/ports.py): the C side (bpf/meshlet.h) must agree.

The header is run through the C preprocessor (gcc, from .ci/setup), so what is compared is what the BPF
programs are compiled with (macros expanded), not a regex's reading of the text.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from meshlet_contracts import ports

HEADER = Path(__file__).resolve().parents[3] / "bpf" / "meshlet.h"
MIRRORED = {
    "MESHLET_OUTBOUND_PORT": ports.OUTBOUND,
    "MESHLET_INBOUND_PORT": ports.INBOUND_PLAINTEXT,
    "MESHLET_HBONE_PORT": ports.HBONE,
    "MESHLET_APP_MARK": ports.TRANSPARENT_MARK,
}


def header_values(names: list[str]) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is missing: .ci/setup installs it")
    source = f'#include "{HEADER}"\n' + "".join(f"long long v_{n} = ({n});\n" for n in names)
    out = subprocess.run([gcc, "-E", "-P", "-x", "c", "-"], input=source, capture_output=True, text=True, check=True)
    values = {}
    for line in out.stdout.splitlines():
        if line.startswith("long long v_"):
            name, _, expr = line.removeprefix("long long v_").rstrip(";").partition(" = ")
            values[name] = int(expr.strip("() "), 0)  # a literal, decimal or hex
    return values


def test_bpf_header_constants_equal_the_python_contracts() -> None:
    assert header_values(list(MIRRORED)) == MIRRORED


def test_every_port_and_mark_in_the_header_is_mirrored() -> None:
    defined = {line.split()[1] for line in HEADER.read_text().splitlines() if line.startswith("#define MESHLET_")}
    constants = {n for n in defined if n.endswith(("_PORT", "_MARK"))}
    assert constants == set(MIRRORED), "a port or mark in bpf/meshlet.h has no counterpart in meshlet_contracts"
