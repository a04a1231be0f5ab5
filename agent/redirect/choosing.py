"""Choosing the redirection backend: `--redirect iptables|ebpf|auto`.

auto tries eBPF first and proves it the only reliable way, by compiling, loading and attaching the
programs (kernel version numbers do not say which helpers a distribution kernel has); any failure
falls back to iptables, with the reason kept for `meshlet status`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.redirect.ebpf import EbpfBackend, EbpfSettings
from agent.redirect.iptables import InpodSettings, IptablesBackend
from agent.redirect.routing import RedirectError

log = logging.getLogger(__name__)
Backend = IptablesBackend | EbpfBackend


def _ebpf_prerequisites(pods_cgroup: Path | None) -> str | None:
    """Why eBPF cannot work here, or None when it may."""
    if pods_cgroup is None:
        return "no --pods-cgroup given (the cgroup v2 directory holding this node's pods)"
    if not (pods_cgroup / "cgroup.procs").exists():
        return f"{pods_cgroup} is not a cgroup v2 directory"
    if not Path("/sys/fs/bpf").is_mount():
        return "bpffs is not mounted at /sys/fs/bpf"
    return None


def choose(
    mode: str, probe_ip: str, pin_dir: Path, pods_cgroup: Path | None, local_hops: bool = False
) -> tuple[Backend, str]:
    """The backend for `mode`, and why it is the one (raises RedirectError when `ebpf` cannot work)."""
    if mode == "iptables":
        return IptablesBackend(InpodSettings(probe_ip=probe_ip)), "chosen with --redirect iptables"
    missing = _ebpf_prerequisites(pods_cgroup)
    if missing is None:
        assert pods_cgroup is not None
        try:
            backend = EbpfBackend(EbpfSettings(probe_ip, pin_dir, pods_cgroup, local_hops))
            how = "reused the pinned programs" if backend.programs.reused else "compiled and loaded the programs"
            return backend, f"{'auto: eBPF works here' if mode == 'auto' else 'chosen with --redirect ebpf'} ({how})"
        except RedirectError as exc:
            missing = str(exc)
    if mode == "ebpf":
        raise RedirectError(f"--redirect ebpf: {missing}")
    log.warning("eBPF redirection unavailable (%s); using iptables", missing)
    return IptablesBackend(InpodSettings(probe_ip=probe_ip)), f"auto: eBPF unavailable ({missing})"
