"""The demo's traffic: every pod calls every other pod with curl, and we report what happened.

Each call is made by curl inside the calling pod's netns, against the callee's pod IP on 8080. The app
answers with the peer address it saw, which is what the mesh must preserve. How a call travels follows
from enrollment (both ends enrolled: HBONE mTLS between the two ztunnels; one end: plaintext through
ztunnel; neither: no mesh); `ztunnel_summary` then reads each node's ztunnel metrics, so the report
shows what the proxies actually counted rather than only what was expected.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from meshlet.lab import kernel
from meshlet.lab.plan import APP_PORT, LabPlan, PodPlan
from meshlet.lab.processes import in_netns
from meshlet.lab.scrape import samples

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
            "fromNode": self.source.node,
            "to": f"{self.destination.namespace}/{self.destination.name}",
            "toNode": self.destination.node,
            "ok": self.ok,
            "status": self.status,
            "peerSeen": self.peer_seen,
            "error": self.error,
            "security": self.security,
            "decision": self.decision,
        }


def expected_path(source: PodPlan, destination: PodPlan, enrolled: set[tuple[str, str]]) -> str:
    src, dst = (source.namespace, source.name) in enrolled, (destination.namespace, destination.name) in enrolled
    if src and dst:
        return f"mTLS {source.namespace}/sa/web -> {destination.namespace}/sa/web"
    if src:
        return "plaintext out of the mesh (passthrough)"
    if dst:
        return "plaintext into the mesh (PERMISSIVE)"
    return "plaintext, no mesh"


def call(source: PodPlan, destination: PodPlan, enrolled: set[tuple[str, str]], timeout: float = 3.0) -> Call:
    url = f"http://{destination.ip}:{APP_PORT}/"
    # In the pod's cgroup as well as its netns: the eBPF backend captures by cgroup, as on a real node
    # where every process of a pod is in the pod's cgroup.
    proc = subprocess.run(
        [*in_netns(source.netns), "curl", "-sS", "-m", str(timeout), "-w", "\n%{http_code}", url],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: kernel.cgroup_join(source.cgroup),
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
    return Call(source, destination, status, peer, "", expected_path(source, destination, enrolled), "allowed")


def traffic(plan: LabPlan, enrolled: set[tuple[str, str]]) -> list[Call]:
    """Every ordered pair of distinct pods, called in parallel (bounded: 8 at a time)."""
    pairs = [(s, d) for s in plan.pods for d in plan.pods if s is not d]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda pair: call(pair[0], pair[1], enrolled), pairs))


def ztunnel_summary(plan: LabPlan) -> list[dict[str, Any]]:
    """Per node, what its ztunnel counted: connections by security and reporter, and failures."""
    out = []
    for node in plan.nodes:
        entry: dict[str, Any] = {"node": node.name, "mutualTls": 0, "plaintext": 0, "errors": 0, "principals": []}
        try:
            with _DIRECT.open(f"http://{node.ip}:15020/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError as exc:
            entry["error"] = str(exc)
            out.append(entry)
            continue
        principals: set[str] = set()
        for name, labels, value in samples(text):
            if name == "istio_tcp_connections_opened_total" and labels.get("reporter") == "source":
                kind = "mutualTls" if labels.get("connection_security_policy") == "mutual_tls" else "plaintext"
                entry[kind] += int(value)
                if kind == "mutualTls":
                    principals.add(labels.get("source_principal", ""))
            elif name == "meshlet_connection_errors_total":
                entry["errors"] += int(value)
        entry["principals"] = sorted(principals)
        out.append(entry)
    return out
