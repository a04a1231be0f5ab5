"""Fail fast, under both redirection backends: a connection the mesh cannot complete is refused at once, never
left to time out, and the ztunnel that refused it says why in its log.

- A closed port of an enrolled pod on another node: the destination ztunnel's connect to the app is reset by
  the pod's kernel, it answers the CONNECT 503, and the client is reset (curl 7 or 56, never 28: a timeout).
- Fail closed with ztunnel gone (tests/e2e/test_mesh.py, on the lab that test kills a ztunnel in): plaintext
  into an enrolled pod is refused with a reset (under eBPF the tc program answers the SYN itself), never sent
  around ztunnel; an enrolled client's connection to that pod is refused too, with the errno in the log.

How long a refusal takes is measured by tests/reliability, not asserted here; curl's own `-m` bounds each
attempt well above the refusal time and below the SYN retry a drop would cost.
"""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import Lab
from tests.e2e.mesh_helpers import REFUSED, curl, logged_after, reaches, url, ztunnel_log

CLOSED_PORT = 9999
"""No lab app listens there."""
ATTEMPT = 3
"""curl's -m: a dropped SYN (retried after 1 s, then 3 s) would run into it."""
LOG_TIMEOUT = 5.0


@pytest.fixture
def lab(shared_backend_lab: Lab) -> Lab:
    """Once per redirection backend (its name in `status["backend"]`)."""
    return shared_backend_lab


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
