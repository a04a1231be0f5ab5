"""The reply route both backends install in a pod netns, over netlink: what `ip` then shows, idempotence, removal,
and sysctls set in that netns only. A real network namespace of the test's own, removed afterwards."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.redirect import routing

SYSCTL = "net.ipv4.tcp_fwmark_accept"


def ip(netns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"mlt-{uuid.uuid4().hex[:8]}-route"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_the_reply_route_is_installed_once_and_removed_as_ip_shows_it(netns: str) -> None:
    path = Path("/var/run/netns") / netns
    assert not routing.route_present(path)
    routing.install_route(path)
    routing.install_route(path)  # a second pass changes nothing
    rules = [line for line in ip(netns, "rule").splitlines() if line.startswith(f"{routing.RULE_PREF}:")]
    assert len(rules) == 1 and "fwmark 0x111/0xfff lookup 100" in rules[0], rules
    assert ip(netns, "route", "show", "table", "100").split()[:4] == ["local", "default", "dev", "lo"]
    assert routing.route_present(path)
    routing.remove_route(path)
    assert not routing.route_present(path)
    assert f"{routing.RULE_PREF}:" not in ip(netns, "rule")


def test_sysctls_are_read_and_set_in_the_pods_netns_only(netns: str) -> None:
    path = Path("/var/run/netns") / netns
    host = Path("/proc/sys", *SYSCTL.split(".")).read_text().strip()
    routing.set_sysctls(path, {SYSCTL: "1"})
    assert routing.sysctls(path, [SYSCTL]) == {SYSCTL: "1"}
    inside = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", SYSCTL], capture_output=True, text=True)
    assert inside.stdout.strip() == "1"
    assert Path("/proc/sys", *SYSCTL.split(".")).read_text().strip() == host


def test_a_netns_that_is_gone_is_a_redirect_error_naming_it() -> None:
    gone = Path("/var/run/netns/mlt-no-such-netns")
    with pytest.raises(routing.RedirectError, match="mlt-no-such-netns"):
        routing.route_present(gone)
    with pytest.raises(routing.RedirectError, match="mlt-no-such-netns"):
        routing.sysctls(gone, [SYSCTL])
