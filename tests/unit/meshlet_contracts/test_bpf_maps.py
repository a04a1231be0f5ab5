"""Every ctypes struct in meshlet_contracts/bpf_maps.py has the size and field offsets of its C struct in bpf/meshlet.h.

The C side is measured by compiling a small program against the header with the system compiler, so
the check is of the real layout, not of a copy of it."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from meshlet_contracts.bpf_maps import STRUCTS, ip_to_net, net_to_ip

HEADER_DIR = Path(__file__).resolve().parents[3] / "bpf"


def c_layout(tmp_path: Path) -> dict[str, dict[str, int]]:
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/types.h>', '#include "meshlet.h"',
             "int main(void) {"]  # fmt: skip
    for name, struct in STRUCTS.items():
        lines.append(f'printf("{name} sizeof %zu\\n", sizeof(struct {name}));')
        for field, *_ in struct._fields_:
            lines.append(f'printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    lines.append("return 0; }")
    src, exe = tmp_path / "layout.c", tmp_path / "layout"
    src.write_text("\n".join(lines))
    subprocess.run(["cc", f"-I{HEADER_DIR}", "-o", str(exe), str(src)], check=True, capture_output=True)
    out: dict[str, dict[str, int]] = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        struct_name, field, value = line.split()
        out.setdefault(struct_name, {})[field] = int(value)
    return out


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (.ci/setup installs gcc)")
def test_ctypes_structs_match_the_c_header(tmp_path: Path) -> None:
    layout = c_layout(tmp_path)
    assert set(layout) == set(STRUCTS)
    for name, struct in STRUCTS.items():
        assert ctypes.sizeof(struct) == layout[name]["sizeof"], name
        for field, *_ in struct._fields_:
            assert getattr(struct, field).offset == layout[name][field], f"{name}.{field}"


def test_addresses_round_trip_in_network_order() -> None:
    value = ip_to_net("10.244.1.2")
    assert value.to_bytes(4, "little") == bytes([10, 244, 1, 2])  # as the kernel stores it on x86
    assert net_to_ip(value) == "10.244.1.2"
