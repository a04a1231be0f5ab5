"""Fail fast, under both redirection backends: a connection the mesh cannot complete is refused at once, never
left to time out, and the ztunnel that refused it says why in its log.

- A closed port of an enrolled pod on another node: the destination ztunnel's connect to the app is reset by
  the pod's kernel, it answers the CONNECT 503, and the client is reset (curl 7 or 56, never 28: a timeout).
- Fail closed with ztunnel gone: a plaintext connection into an enrolled pod is refused with a reset (under
  eBPF the tc program answers the SYN itself), never sent around ztunnel to the app; an enrolled client's
  connection to that pod is refused too (its ztunnel's HBONE dial is reset), with the errno in the log.

How long a refusal takes is measured by tests/reliability, not asserted here; curl's own `-m` bounds each
attempt well above the refusal time and below the SYN retry a drop would cost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import Lab
from tests.e2e.mesh_helpers import curl, reaches, stop, url

CLOSED_PORT = 9999
"""No lab app listens there."""
REFUSED = (7, 56)
"""curl's exit codes for a connection refused (7) or reset once open (56); 28 is a timeout."""
ATTEMPT = 3
"""curl's -m: a dropped SYN (retried after 1 s, then 3 s) would run into it."""
LOG_TIMEOUT = 5.0


@pytest.fixture
def lab(shared_backend_lab: Lab) -> Lab:
    """Once per redirection backend (its name in `status["backend"]`)."""
    return shared_backend_lab


def ztunnel_log(lab: Lab, node: str) -> Path:
    return Path(lab.status["directory"]) / "logs" / f"ztunnel-{node}.log"


def logged_after(log: Path, offset: int, *words: str) -> str:
    """The first line written to `log` after `offset` that holds every one of `words` ("" when none does)."""
    with log.open("rb") as f:
        f.seek(offset)
        new = f.read().decode(errors="replace")
    return next((line for line in new.splitlines() if all(w in line for w in words)), "")


def test_a_closed_port_is_refused_at_once_and_the_log_says_why(lab: Lab) -> None:
    target = lab.pod("web-2a")["ip"]
    log = ztunnel_log(lab, "node2")
    offset = log.stat().st_size
    out = curl(lab, "web-1a", f"http://{target}:{CLOSED_PORT}/", "-o", "/dev/null", timeout=ATTEMPT)
    assert out.returncode in REFUSED, f"{lab.status['backend']}: want a refusal, got exit {out.returncode}: {out}"
    line = wait_for(
        lambda: logged_after(log, offset, "app_unreachable", f":{CLOSED_PORT}"), LOG_TIMEOUT, "the refusal logged"
    )
    assert "ECONNREFUSED" in line, line  # the reason, in the kernel's words, not an empty tail
    assert reaches(lab, "web-1a", url(lab, "web-2a"))  # the open port of the same pod still answers


@pytest.mark.breaks_lab
def test_with_ztunnel_gone_an_enrolled_pod_refuses_with_a_reset_never_in_the_clear(lab: Lab) -> None:
    assert reaches(lab, "web-2b", url(lab, "web-2a"))
    stop(lab, "ztunnel/node2")
    # Plaintext from a pod outside the mesh, on the same node: captured, nobody to take it, refused.
    inbound = curl(lab, "web-2b", url(lab, "web-2a"), "-o", "/dev/null", timeout=ATTEMPT)
    assert inbound.returncode == 7, f"{lab.status['backend']}: want connection refused, got {inbound}"
    # From an enrolled pod on the other node: its ztunnel's HBONE dial to the pod is reset.
    log = ztunnel_log(lab, "node1")
    offset = log.stat().st_size
    outbound = curl(lab, "web-1a", url(lab, "web-2a"), "-o", "/dev/null", timeout=ATTEMPT)
    assert outbound.returncode in REFUSED, f"{lab.status['backend']}: want a refusal, got {outbound}"
    line = wait_for(lambda: logged_after(log, offset, lab.pod("web-2a")["ip"]), LOG_TIMEOUT, "the refusal logged")
    assert "ECONNREFUSED" in line, line
    assert reaches(lab, "web-2b", url(lab, "web-1b"))  # pods outside the mesh are not affected
