"""Compile meshlet's programs with bcc once, pin them and their maps, and attach the cgroup ones.

One BPF module holds every program (`connect4.c`, `sockops.c`, `inbound.c`, sharing `maps.h`), so
they share maps. Everything is pinned under a per-node directory of bpffs; an agent that restarts
finds the pins and reuses them without compiling or detaching anything, so traffic never sees a gap
(and enrollment, which lives in the `enrolled` map, survives). Programs attached to a cgroup stay
attached when the agent exits: the cgroup holds them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from meshlet_contracts import bpf_syscall as syscall
from meshlet_contracts.bpf_maps import MAPS, PROGRAMS, map_pin, objects_dir, program_pin

SOURCE_DIR = Path(__file__).parent
PROG_TYPES = {"connect4": 18, "sockops": 13, "inbound": 3, "local_hop": 16}
"""bcc's BPF.CGROUP_SOCK_ADDR, BPF.SOCK_OPS, BPF.SCHED_CLS, BPF.SK_MSG."""
SK_MSG_VERDICT = 7
"""BPF_SK_MSG_VERDICT: local_hop is attached to the local_hops sockhash itself."""
EXPECTED_ATTACH = {"connect4": 10}
"""BPF_CGROUP_INET4_CONNECT: connect4 must be loaded for its attach type (EBPF-NOTES)."""
CGROUP_ATTACH = {"connect4": 10, "sockops": 3}
"""Attach types: BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_SOCK_OPS."""
SOCKOPS_ABOVE_PODS = True
"""sockops attaches to the pods cgroup's parent: it must also see ztunnel's sockets (local hops)."""


class LoadError(RuntimeError):
    """The programs could not be compiled, loaded, pinned or attached; says which and why."""


@dataclass(slots=True)
class Programs:
    """The node's programs and maps, as fds of pinned objects."""

    pin_dir: Path
    progs: dict[str, int] = field(default_factory=dict)
    maps: dict[str, int] = field(default_factory=dict)
    reused: bool = False
    attached: dict[str, str] = field(default_factory=dict)
    """Program -> where it is attached (for status)."""

    def close(self) -> None:
        for fd in [*self.progs.values(), *self.maps.values()]:
            os.close(fd)
        self.progs.clear()
        self.maps.clear()


def _pinned(pin_dir: Path) -> bool:
    return all(program_pin(pin_dir, p).exists() for p in PROGRAMS) and all(map_pin(pin_dir, m).exists() for m in MAPS)


def _compile_and_pin(pin_dir: Path) -> None:
    try:
        from bcc import BPF  # only here: compiling needs bcc and kernel headers, reuse needs neither
        from bcc.libbcc import lib
    except ImportError as exc:
        raise LoadError(f"bcc is not importable ({exc}); run .ci/setup") from None
    # bcc treats only functions of the main text as programs, so the entry files are joined (their
    # shared headers have include guards).
    text = "\n".join((SOURCE_DIR / f"{name}.c").read_text() for name in ("common", *PROGRAMS))
    try:
        module = BPF(text=text, cflags=[f"-I{SOURCE_DIR}", "-w"])
    except Exception as exc:  # bcc raises bare Exception for compile errors
        raise LoadError(f"compiling {', '.join(f'bpf/{p}.c' for p in PROGRAMS)} failed: {exc}") from None
    try:
        if pin_dir.exists():
            shutil.rmtree(pin_dir)  # pins of another version, or half made: replaced whole
        objects_dir(pin_dir).mkdir(parents=True)
        for name in PROGRAMS:
            try:
                fn = module.load_func(name, PROG_TYPES[name], attach_type=EXPECTED_ATTACH.get(name, -1))
            except Exception as exc:
                raise LoadError(f"loading program {name} (bpf/{name}.c) failed: {exc}") from None
            syscall.obj_pin(fn.fd, program_pin(pin_dir, name))
        for name in MAPS:
            # bcc's Table wrapper refuses sockhash maps; the module hands out the fd of any map by name.
            fd = lib.bpf_table_fd(module.module, name.encode())
            if fd < 0:
                raise LoadError(f"map {name} was not created by the module")
            syscall.obj_pin(fd, map_pin(pin_dir, name))
        # The sk_msg program belongs to the sockhash: attached once, it stays as long as the map.
        syscall.prog_attach(module.load_func("local_hop", PROG_TYPES["local_hop"]).fd,
                            lib.bpf_table_fd(module.module, b"local_hops"), SK_MSG_VERDICT)  # fmt: skip
    finally:
        module.cleanup()


def load(pin_dir: Path) -> Programs:
    """The node's programs: reused from `pin_dir` when pinned there at this version, else compiled."""
    reused = _pinned(pin_dir)
    if not reused:
        _compile_and_pin(pin_dir)
    programs = Programs(pin_dir, reused=reused)
    try:
        for name in PROGRAMS:
            programs.progs[name] = syscall.obj_get(program_pin(pin_dir, name))
        for name in MAPS:
            programs.maps[name] = syscall.obj_get(map_pin(pin_dir, name))
    except syscall.BpfError:
        programs.close()
        raise
    return programs


def attach_cgroup(programs: Programs, cgroup: Path) -> None:
    """Attach connect4 and sockops to `cgroup` (the one holding the node's pods). Attaching what is
    already attached replaces it in place, so this is safe on every start."""
    for name, attach_type in CGROUP_ATTACH.items():
        target = cgroup.parent if name == "sockops" and SOCKOPS_ABOVE_PODS else cgroup
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syscall.prog_attach(programs.progs[name], fd, attach_type)
        except syscall.BpfError as exc:
            raise LoadError(f"attaching {name} to cgroup {target} failed: {exc}") from None
        finally:
            os.close(fd)
        programs.attached[name] = f"cgroup {target}"
    programs.attached["local_hop"] = "sockhash local_hops (sk_msg verdict)"


def unpin(pin_dir: Path) -> None:
    """Remove the pins (what is still attached stays until its cgroup or device goes)."""
    shutil.rmtree(pin_dir, ignore_errors=True)
