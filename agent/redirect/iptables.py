"""The iptables backend: rules inside each enrolled pod's netns, in chains of our own.

- nat OUTPUT -> MESHLET_OUTPUT: the pod's outbound TCP goes to ztunnel's 15001 (original destination via
  SO_ORIGINAL_DST), except ztunnel's own connections (SO_MARK 0x539) and traffic that stays in the pod.
- nat PREROUTING -> MESHLET_PRERT: inbound TCP goes to 15006, except HBONE (15008, ztunnel's own
  listener) and the node's probe address (kubelet probes reach the app directly, as in Istio).
- mangle: connections ztunnel opens to the app with the caller's IP as source (IP_TRANSPARENT, mark
  0x111) get connmark 0x111; the app's replies restore that mark, and `ip rule fwmark 0x111 lookup 100` with
  `local 0.0.0.0/0 dev lo` in table 100 delivers them to ztunnel instead of routing them out of the pod.

Rules are data (`ruleset`), written exactly as `iptables-save` prints them, so checking for drift is a
text comparison. They are applied in one `iptables-restore --noflush` transaction per pod: declaring an
existing chain flushes it, so re-applying replaces our rules and never duplicates them; the jumps from
the built-in chains are added only when missing (appended: after any Istio in-pod rules).
All calls block (they run iptables in the pod netns): the agent runs them in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.redirect.routing import (
    MARK_MASK,
    RedirectError,
    in_netns,
    install_route,
    remove_route,
    route_present,
)
from meshlet_contracts.ports import HBONE, INBOUND_PLAINTEXT, OUTBOUND, ZTUNNEL_MARK
from meshlet_contracts.ports import REPLY_TABLE as ROUTE_TABLE
from meshlet_contracts.ports import TRANSPARENT_MARK as APP_MARK

CONN_MARK = APP_MARK
"""Connection mark of ztunnel's transparent connections to the app (for reply routing)."""
CHAINS = {"mangle": ("MESHLET_PRERT", "MESHLET_OUTPUT"), "nat": ("MESHLET_PRERT", "MESHLET_OUTPUT")}
HOOKS = {"MESHLET_PRERT": "PREROUTING", "MESHLET_OUTPUT": "OUTPUT"}
__all__ = ["ZTUNNEL_MARK", "CONN_MARK", "RedirectError", "InpodSettings", "IptablesBackend", "ruleset"]


@dataclass(frozen=True, slots=True)
class InpodSettings:
    """The ports and addresses the rules steer to and around."""

    probe_ip: str
    """The node's address that kubelet probes come from: never captured."""
    outbound_port: int = OUTBOUND
    inbound_port: int = INBOUND_PLAINTEXT
    hbone_port: int = HBONE


def ruleset(s: InpodSettings) -> dict[str, dict[str, list[str]]]:
    """table -> chain -> rules, each rule as `iptables-save` prints it (without the `-A CHAIN`)."""
    mark = f"0x{ZTUNNEL_MARK:x}/0x{MARK_MASK:x}"
    conn = f"0x{CONN_MARK:x}/0x{MARK_MASK:x}"
    return {
        "mangle": {
            # ztunnel's connections to the app carry APP_MARK: remember it on the connection, and put it
            # back on the app's replies (OUTPUT) so that they take table 100 back to ztunnel.
            "MESHLET_PRERT": [f"-m mark --mark {conn} -j CONNMARK --set-xmark {conn}"],
            "MESHLET_OUTPUT": [
                f"-m connmark --mark {conn} -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"
            ],
        },
        "nat": {
            "MESHLET_PRERT": [
                f"-s {s.probe_ip}/32 -p tcp -j RETURN",
                f"-p tcp -m tcp --dport {s.hbone_port} -j RETURN",
                "-i lo -j RETURN",
                f"-p tcp -j REDIRECT --to-ports {s.inbound_port}",
            ],
            "MESHLET_OUTPUT": [
                f"-m mark --mark {mark} -j RETURN",
                "-d 127.0.0.0/8 -j RETURN",
                "-o lo -j RETURN",
                f"-p tcp -j REDIRECT --to-ports {s.outbound_port}",
            ],
        },
    }


@dataclass(slots=True)
class _Saved:
    """Our part of a netns' rules, as `iptables-save` shows it."""

    chains: dict[str, set[str]]
    """table -> our chains declared there (even when empty)."""
    rules: dict[str, dict[str, list[str]]]
    """table -> chain -> rules: our chains' rules, and the built-in chains' jumps to ours."""

    def jumps(self, table: str, chain: str) -> int:
        return self.rules.get(table, {}).get(HOOKS[chain], []).count(f"-j {chain}")


def _read(netns: Path) -> _Saved:
    saved = _Saved({}, {})
    table = ""
    for line in in_netns(netns, ["iptables-save"]).splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":MESHLET_"):
            saved.chains.setdefault(table, set()).add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            if chain in HOOKS or (chain in HOOKS.values() and rule.startswith("-j MESHLET_")):
                saved.rules.setdefault(table, {}).setdefault(chain, []).append(rule)
    return saved


def _expected(s: InpodSettings) -> dict[str, dict[str, list[str]]]:
    want = ruleset(s)
    for table, chains in CHAINS.items():
        for chain in chains:
            want[table].setdefault(HOOKS[chain], []).append(f"-j {chain}")
    return want


class IptablesBackend:
    """Installs, checks and removes the in-pod rules (and the reply-routing rule) in a pod netns."""

    name = "iptables"

    def __init__(self, settings: InpodSettings) -> None:
        self.settings = settings

    def drift(self, netns: Path) -> list[str]:
        """What differs from the desired rules in `netns` ([] when exactly as desired)."""
        have, want = _read(netns).rules, _expected(self.settings)
        problems = []
        for table in sorted(set(want) | set(have)):
            for chain in sorted(set(want.get(table, {})) | set(have.get(table, {}))):
                w, h = want.get(table, {}).get(chain, []), have.get(table, {}).get(chain, [])
                if w != h:
                    problems.append(f"{table}/{chain}: have {h}, want {w}")
        if not route_present(netns):
            problems.append(f"ip rule fwmark 0x{CONN_MARK:x} lookup {ROUTE_TABLE} or its local route is missing")
        return problems

    def install(self, netns: Path, ips: tuple[str, ...] = ()) -> bool:
        """Make the rules in `netns` exactly as desired; returns False when they already were (no change)."""
        if not self.drift(netns):
            return False
        saved = _read(netns)
        lines: list[str] = []
        for table, chains in ruleset(self.settings).items():
            lines.append(f"*{table}")
            lines += [f":{chain} - [0:0]" for chain in chains]  # declares, or flushes when present
            for chain, rules in chains.items():
                lines += [f"-A {chain} {rule}" for rule in rules]
            for chain in chains:
                count = saved.jumps(table, chain)
                lines += [f"-D {HOOKS[chain]} -j {chain}"] * max(0, count - 1)  # duplicates cut back to one
                if count == 0:
                    lines.append(f"-A {HOOKS[chain]} -j {chain}")
            lines.append("COMMIT")
        in_netns(netns, ["iptables-restore", "--noflush"], "\n".join(lines) + "\n")
        install_route(netns)
        return True

    def remove(self, netns: Path, ips: tuple[str, ...] = ()) -> None:
        """Remove every rule, chain and route of ours from `netns`; nothing else is touched."""
        saved = _read(netns)
        lines: list[str] = []
        for table, chains in CHAINS.items():
            present = [c for c in chains if c in saved.chains.get(table, set())]
            deletes = [f"-D {HOOKS[c]} -j {c}" for c in chains for _ in range(saved.jumps(table, c))]
            if present or deletes:
                lines += [f"*{table}", *deletes, *(f"-F {c}" for c in present), *(f"-X {c}" for c in present)]
                lines.append("COMMIT")
        if lines:
            in_netns(netns, ["iptables-restore", "--noflush"], "\n".join(lines) + "\n")
        remove_route(netns)
