"""`meshlet check`: grouped pre-flight and health checks, each with a hint when it fails (like `linkerd check`).

Kernel and tool checks look at this machine; node checks talk to the node's agent, ztunnel and (from the
node's credential) control. Nothing here changes anything. A check is a failure (the mesh cannot work) or a
warning (something it can do without: BTF, bcc and bpffs only matter to the eBPF backend, the iptables one
works without them); each points to the README section that explains it. Only failures make it exit 1.
"""

from __future__ import annotations

import email.utils
import os
import platform
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from meshlet.cli.endpoints import EndpointError, NodeEndpoints, agent_status, config_dump

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CLOCK_SKEW_MAX = 5.0


SETUP = "README.md#on-a-fresh-machine-debian-12-vm-as-root"
NODE = "README.md#looking-at-a-node"
CONTROL = "README.md#control"
FAIL_CLOSED = "README.md#fail-closed"
WARNING_ONLY = frozenset({"bpffs", "BTF", "bcc", "kernel headers for bcc"})
"""What only the eBPF backend needs: the iptables backend runs without, so these warn rather than fail."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    docs: str = SETUP
    """The README section about it (a path#anchor in the repository)."""

    @property
    def level(self) -> str:
        """ "fail": the mesh cannot work without it; "warn": the eBPF backend cannot (iptables can)."""
        return "warn" if self.name in WARNING_ONLY else "fail"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "level": self.level, "detail": self.detail,
                "hint": self.hint if not self.ok else "", "docs": self.docs}  # fmt: skip


def _mounted(path: str, fstype: str) -> bool:
    try:
        return any(
            line.split()[1] == path and line.split()[2] == fstype
            for line in Path("/proc/mounts").read_text().splitlines()
        )
    except OSError:
        return False


def kernel_checks() -> list[Check]:
    release = platform.release()
    major, minor = (int(x) for x in release.split(".")[:2])
    cgroup2 = next((p for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup") if _mounted(p, "cgroup2")), None)
    return [
        Check("kernel version", (major, minor) >= (5, 10), release, "meshlet needs Linux 5.10 or newer"),
        Check("cgroup v2", cgroup2 is not None, f"mounted at {cgroup2}" if cgroup2 else "not mounted",
              "mount cgroup2 (e.g. at /sys/fs/cgroup/unified); pods' cgroups and cgroup BPF programs need it"),
        Check("bpffs", _mounted("/sys/fs/bpf", "bpf"), "/sys/fs/bpf",
              "mount -t bpf bpf /sys/fs/bpf (.ci/setup does it); pinned programs and maps live there"),
        Check("BTF", Path("/sys/kernel/btf/vmlinux").exists(), "/sys/kernel/btf/vmlinux",
              "a kernel built with CONFIG_DEBUG_INFO_BTF"),
    ]  # fmt: skip


def tool_checks() -> list[Check]:
    headers = Path(f"/lib/modules/{platform.release()}/build/include")
    try:
        import bcc  # noqa: F401  (the import is the check)

        bcc_ok, bcc_detail = True, "importable"
    except Exception as exc:  # bcc fails in many ways when its library or headers are off
        bcc_ok, bcc_detail = False, f"{type(exc).__name__}: {exc}"
    checks = [
        Check("bcc", bcc_ok, bcc_detail, "run .ci/setup: it installs python3-bpfcc and exposes bcc to the venv"),
        Check("kernel headers for bcc", headers.is_dir(), str(headers.parent),
              "run .ci/setup: it links Debian's linux-headers-amd64 there when the kernel ships none"),
    ]  # fmt: skip
    for tool in ("iptables-restore", "iptables-save", "nsenter", "ip"):
        path = shutil.which(tool)
        checks.append(Check(f"{tool} present", path is not None, path or "not on PATH",
                            f"install {tool} (.ci/setup installs iptables and iproute2)"))  # fmt: skip
    if shutil.which("iptables-save"):
        proc = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
        checks.append(Check("iptables usable", proc.returncode == 0, proc.stderr.strip() or "iptables-save ran",
                            "run as root with CAP_NET_ADMIN"))  # fmt: skip
    return checks


def node_checks(ep: NodeEndpoints) -> list[Check]:
    checks: list[Check] = []
    try:
        agent = agent_status(ep)
        checks.append(
            Check("agent socket", True, f"{ep.agent_socket}: node {agent['node']}, {agent['backend']}", docs=NODE)
        )
    except EndpointError as exc:
        checks.append(
            Check("agent socket", False, str(exc), "start the agent (meshlet lab up, or the DaemonSet)", NODE)
        )
    try:
        dump: dict[str, Any] | None = config_dump(ep)
    except EndpointError as exc:
        dump = None
        checks.append(Check("ztunnel admin", False, str(exc), "start ztunnel on this node", NODE))
    if dump is not None:
        hint = "see ztunnel's log; it needs config from control and the agent's pod snapshot"
        checks.append(Check("ztunnel ready", dump["ready"], "; ".join(dump["problems"]) or "ready", hint, FAIL_CLOSED))
        config = dump["config"]
        checks.append(Check("control reachable from ztunnel", config["connected"],
                            f"{config['url']}: " + (config.get("lastError") or "connected"),
                            "check control is running and the node's credential is registered", CONTROL))  # fmt: skip
    checks += _control_checks(ep)
    return checks


def _control_checks(ep: NodeEndpoints) -> list[Check]:
    if ep.control_url is None or ep.credential_dir is None:
        return [
            Check("clock and CA trust", True, "skipped: control's address is known only for lab nodes", docs=CONTROL)
        ]
    checks = []
    host, _, port = ep.control_url.removeprefix("https://").rpartition(":")
    root = ep.credential_dir / "root-cert.pem"
    try:
        ctx = ssl.create_default_context(cafile=str(root))
        ctx.check_hostname = False  # the serving certificate names the listen IP; trust is what we check
        with socket.create_connection((host, int(port)), timeout=3) as raw, ctx.wrap_socket(raw) as tls:
            version = tls.version()
        checks.append(Check("CA trust", True, f"control's certificate chains to {root} ({version})", docs=CONTROL))
    except (OSError, ssl.SSLError) as exc:
        hint = "the node credential's root must be control's CA root: provision the node again"
        checks.append(Check("CA trust", False, f"{ep.control_url}: {exc}", hint, CONTROL))
    if ep.control_metrics:
        try:
            with _DIRECT.open(f"{ep.control_metrics}/healthz", timeout=3) as resp:
                date = resp.headers.get("Date")
            skew = abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) if date else None
            ok = skew is not None and skew <= CLOCK_SKEW_MAX
            detail = f"{skew:.1f}s from control's clock" if skew is not None else "control sent no Date header"
            hint = f"keep clocks within {CLOCK_SKEW_MAX:.0f}s (NTP): certificates have validity windows"
            checks.append(Check("clock", ok, detail, hint, CONTROL))
        except OSError as exc:
            checks.append(Check("clock", False, f"{ep.control_metrics}: {exc}", "control must be running", CONTROL))
    return checks


def run_checks(ep: NodeEndpoints) -> list[tuple[str, list[Check]]]:
    groups = [("kernel", kernel_checks()), ("tools", tool_checks())]
    groups.append(("node " + (ep.node or os.uname().nodename), node_checks(ep)))
    return groups


Groups = list[tuple[str, list[Check]]]


def checks_report(groups: Groups) -> dict[str, Any]:
    """The JSON of `meshlet check`: ok (no failure; warnings allowed), the counts, every check."""
    failed = sum(1 for _, checks in groups for c in checks if not c.ok and c.level == "fail")
    warned = sum(1 for _, checks in groups for c in checks if not c.ok and c.level == "warn")
    return {"ok": not failed, "failures": failed, "warnings": warned,
            "groups": [{"name": n, "checks": [c.to_json() for c in cs]} for n, cs in groups]}  # fmt: skip


def print_checks(groups: Groups, console: Console) -> None:
    """Each check with a mark (pass, fail, warning), a hint and its README section when it did not pass."""
    marks = {"fail": "[red]\u2718[/red]", "warn": "[yellow]![/yellow]"}
    for name, checks in groups:
        console.print(f"[bold]{name}[/bold]")
        for c in checks:
            console.print(f"  {'[green]✔[/green]' if c.ok else marks[c.level]} {c.name}: {escape(c.detail)}",
                          highlight=False)  # fmt: skip
            if not c.ok:
                console.print(f"      [yellow]hint:[/yellow] {escape(c.hint)} (see {c.docs})", highlight=False)
    data = checks_report(groups)
    warnings = f"{data['warnings']} warnings" if data["warnings"] else ""
    if data["failures"]:
        console.print(f"[red]{data['failures']} failed[/red]" + (f", {warnings}" if warnings else ""))
    else:
        console.print("[green]all checks passed[/green]" + (f" ([yellow]{warnings}[/yellow])" if warnings else ""))
