"""c=1 latency while a big config push is applied (issue #18): does the data path stay responsive?

In the iptables lab, right after scenario C: `wrk -c1` runs from web-1a to web-2a (through both ztunnels) while
10,000 pods are written into the lab's store, one file each, as `config_scale.py` writes them (on nodes the lab
does not have, so no agent acts on them, in 100 namespaces with a Service each). Every ztunnel receives and
applies all of them: the snapshot is decoded and converted off the event loop (`ztunnel/config/client.py`),
and this measures whether requests wait meanwhile. The push time is read from each ztunnel's log (its own
clock); the latency from wrk's report over the whole window, compared with C's quiet c=1 row. Each ztunnel's
`meshlet_event_loop_lag_seconds` over the window tells whose turn came late: ticks more than 10 and 50 ms late,
and the worst bucket. The CPU time each lab process spent in the window shows who else wanted the cores. The
pods and Services are removed afterwards and the ztunnels are waited on until they hold the lab's workloads only.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from meshlet.lab.scrape import samples
from tests.bench import config_scale, nginx
from tests.bench.lab import BenchError, Lab, cpu_us
from tests.bench.workloads import parse_wrk, wrk_argv
from tests.integration.control.conftest import namespace

WORKLOADS = 10_000
WINDOW = 12.0
"""Seconds of wrk -c1: a second of quiet, the push (about 3-5 s on the 2-core VM), then quiet again."""
NODE_PREFIX = "far-host-"


def _lab_dir(lab: Lab) -> Path:
    return Path(f"/var/run/meshlet/labs/{lab.lab_id}")


def _holding(logs: list[Path], count: int, since: float) -> dict[str, float] | None:
    """{ztunnel log name: seconds from `since` to the first version holding `count` or more}, once all do."""
    out = {}
    for log in logs:
        at = [
            t for t, _, c in config_scale.logged_versions(log.read_text(errors="replace")) if c >= count and t >= since
        ]
        if not at:
            return None
        out[log.stem.removeprefix("ztunnel-")] = round(min(at) - since, 3)
    return out


def _latest_count(log: Path) -> int:
    found = config_scale.logged_versions(log.read_text(errors="replace"))
    return found[-1][2] if found else 0


def _lag_buckets(lab: Lab, node: str) -> dict[float, float]:
    """{upper bound in seconds (inf for +Inf): ticks at most that late} of a node's ztunnel."""
    out = {}
    for name, labels, value in samples(lab.metrics(node)):
        if name == "meshlet_event_loop_lag_seconds_bucket":
            out[float(labels["le"])] = value
    return out


def lag_summary(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """Ticks in the window, how many came more than 10 / 50 ms late, and the bound of the latest one."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    ticks = delta.get(float("inf"), 0.0)
    worst = next((le for le in sorted(delta) if delta[le] >= ticks), None) if ticks else None
    return {
        "ticks": int(ticks),
        "over10ms": int(ticks - delta.get(0.01, ticks)),
        "over50ms": int(ticks - delta.get(0.05, ticks)),
        "worstAtMostSeconds": worst,
    }


def _wait(what: str, deadline: float, check: Any) -> Any:
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise BenchError(f"{what}: not within the deadline")


def measure(lab: Lab, client: str, server_ip: str, workloads: int = WORKLOADS) -> dict[str, Any]:
    """wrk -c1 across a push of `workloads` pods; the push times per ztunnel and wrk's latency over the window."""
    root = _lab_dir(lab)
    store, logs = root / "store", sorted((root / "logs").glob("ztunnel-*.log"))
    if not logs:
        raise BenchError(f"no ztunnel logs in {root / 'logs'}")
    before = {log: _latest_count(log) for log in logs}
    staging = root / "push-probe-staging"
    staging.mkdir(exist_ok=True)
    names = []
    try:
        names.append("probe-namespaces.yaml")
        namespaces = [namespace(f"ns-{n}", ambient=True) for n in range(config_scale.NAMESPACES)]
        (staging / names[-1]).write_text(yaml.dump_all(namespaces, Dumper=config_scale.DUMPER))
        for n in range(config_scale.NAMESPACES):
            names.append(f"probe-svc.ns-{n}.yaml")
            (staging / names[-1]).write_text(yaml.dump(config_scale.service(f"ns-{n}", n), Dumper=config_scale.DUMPER))
        for i in range(workloads):
            names.append(f"probe-pod.{i}.yaml")
            (staging / names[-1]).write_text(yaml.dump(config_scale.pod(i, NODE_PREFIX), Dumper=config_scale.DUMPER))
        url = f"http://{server_ip}:{nginx.PORT}{nginx.SMALL_PATH}"
        nodes = [log.stem.removeprefix("ztunnel-") for log in logs]
        lag_before = {node: _lag_buckets(lab, node) for node in nodes}
        processes = {key: pid for key, pid in lab.processes().items() if not key.startswith("app/")}
        cpu_before = {key: cpu_us(pid) for key, pid in processes.items()}
        wrk = lab.spawn(client, wrk_argv(url, 1, WINDOW), stdout=-1)  # subprocess.PIPE
        time.sleep(1.0)
        started = time.time()
        for name in names:
            os.replace(staging / name, store / name)
        target = min(before.values()) + workloads
        pushed = _wait("the push at every ztunnel", time.monotonic() + 120, lambda: _holding(logs, target, started))
        out, _ = wrk.communicate(timeout=WINDOW + 60)
        result = parse_wrk(out)
        cpu = {key: round((cpu_us(pid) - cpu_before[key]) / 1e6, 2) for key, pid in processes.items()}
        lag = {node: lag_summary(lag_before[node], _lag_buckets(lab, node)) for node in nodes}
    finally:
        for name in names:
            (store / name).unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    _wait("the ztunnels back to the lab's workloads", time.monotonic() + 120,
          lambda: all(_latest_count(log) <= before[log] for log in logs))  # fmt: skip
    return {
        "workloads": workloads,
        "windowSeconds": WINDOW,
        "pushSeconds": pushed,
        "requests": result.requests,
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "loopLag": lag,
        "cpuSecondsInWindow": cpu,
    }


def table(probe: dict[str, Any], quiet: dict[str, Any] | None) -> str:
    """The probe beside C's quiet c=1 row, then each ztunnel's loop lag and who spent the CPU."""
    lines = [f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}"]
    if quiet is not None:
        lines.append(f"{'C c=1, quiet':28}{quiet['p50_ms']:>10.3f}{quiet['p99_ms']:>10.3f}{quiet['rps']:>10,.0f}")
    during = f"C c=1, {probe['workloads']:,} pushed"
    lines.append(f"{during:28}{probe['p50_ms']:>10.3f}{probe['p99_ms']:>10.3f}{probe['rps']:>10,.0f}")
    pushed = json.dumps(probe["pushSeconds"])
    lines.append(f"push applied at each ztunnel (s): {pushed}; errors: {probe['errors'] or 0}")
    for node, lag in probe["loopLag"].items():
        lines.append(
            f"{node} ztunnel loop: {lag['ticks']} ticks, {lag['over10ms']} more than 10 ms late, "
            f"{lag['over50ms']} more than 50 ms, the latest at most {lag['worstAtMostSeconds']} s"
        )
    cpu = json.dumps(probe["cpuSecondsInWindow"])
    lines.append(f"CPU seconds in the {probe['windowSeconds']:g} s window: {cpu}")
    return "\n".join(lines)
