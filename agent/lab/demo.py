"""The demo's traffic: every pod calls every other pod with curl, and we report what happened.

Each call is made by curl inside the calling pod's netns, against the callee's pod IP on 8080. The app
answers with the peer address it saw, which is what the mesh must preserve. Identity and the policy
decision come from the mesh once its data path runs in the lab; until then every call is plaintext and
nothing decides on it, and the report says so rather than inventing an answer.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent.lab.plan import APP_PORT, LabPlan, PodPlan


@dataclass(frozen=True, slots=True)
class Call:
    """One demo call and what came of it."""

    source: PodPlan
    destination: PodPlan
    status: int
    """HTTP status, 0 when no response arrived."""
    peer_seen: str
    """The caller address the callee's app saw."""
    error: str
    """curl's error when the call failed."""
    security: str
    decision: str

    @property
    def ok(self) -> bool:
        return self.status == 200

    def to_json(self) -> dict[str, Any]:
        return {
            "from": f"{self.source.namespace}/{self.source.name}",
            "from_node": self.source.node,
            "to": f"{self.destination.namespace}/{self.destination.name}",
            "to_node": self.destination.node,
            "ok": self.ok,
            "status": self.status,
            "peer_seen": self.peer_seen,
            "error": self.error,
            "security": self.security,
            "decision": self.decision,
        }


def call(source: PodPlan, destination: PodPlan, timeout: float = 3.0) -> Call:
    url = f"http://{destination.ip}:{APP_PORT}/"
    proc = subprocess.run(
        ["ip", "netns", "exec", source.netns, "curl", "-sS", "-m", str(timeout), "-w", "\n%{http_code}", url],
        capture_output=True,
        text=True,
        check=False,
    )
    body, _, code = proc.stdout.rpartition("\n")
    status = int(code) if code.isdigit() else 0
    if proc.returncode != 0 or status != 200:
        error = proc.stderr.strip().removeprefix("curl: ") or f"HTTP {status}: {body[:80]}"
        return Call(source, destination, status, "", error, "-", "-")
    try:
        peer = str(json.loads(body)["peer"]).rsplit(":", 1)[0]
    except (ValueError, KeyError, TypeError):
        return Call(source, destination, 0, "", f"unexpected answer: {body[:80]!r}", "-", "-")
    # The mesh components are not in the lab yet: traffic goes straight between pods.
    return Call(source, destination, status, peer, "", "plaintext", "no policy point yet")


def traffic(plan: LabPlan) -> list[Call]:
    """Every ordered pair of distinct pods, called in parallel (bounded: 8 at a time)."""
    pairs = [(s, d) for s in plan.pods for d in plan.pods if s is not d]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda pair: call(*pair), pairs))
