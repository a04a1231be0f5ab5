"""The benchmark in one run: `python -m tests.bench.run` (as root; `.ci/bench` sets up first).

Brings up a 2-node lab, starts nginx in the server pods and measures the same workloads over
  A  direct, no mesh                (plain pods web-1b -> web-2b)
  B  an HAProxy mTLS pair           (plain pods, through haproxy on each side)
  C  meshlet, iptables backend      (mesh pods web-1a -> web-2a, through both nodes' ztunnels)
  D  meshlet, eBPF backend          (a second lab with --redirect ebpf; unavailable while refused)
  E  meshlet L7, eBPF backend       (as D in a lab of its own, through a Service port named `http`: L7)
  F  an HAProxy `mode http` mTLS pair (as B, both sides parsing HTTP, server connections reused)
  G  meshlet L7 + routing           (as E, with an HTTPRoute and TrafficPolicies in force: routing.py)
and the HTTP parsers' cost (httptools vs h11, http_parsers.py), then prints the table with the ratios
C/B, D/B, C/A, E/F, G/E and writes it as JSON and a PNG chart.
Everything it started is stopped by PID and the lab is taken down, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tests.bench import config_scale, enrollment, haproxy, http_parsers, nginx, push_probe, report, routing, services
from tests.bench.chart import write_chart
from tests.bench.lab import BenchError, Lab, LabError, Pod, stop
from tests.bench.scenario import Scenario, Settings, measure
from tests.bench.workloads import WorkloadError

RESULTS = Path(__file__).with_name("results")


def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    # a log or a pipe: the table's full width rather than rich's default of 80 columns
    return c if c.is_terminal else Console(stderr=stderr, width=170)


console = _console()
err = _console(stderr=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bash .ci/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (default 5)")
    p.add_argument("--bulk-runs", type=int, default=3, help="100 MB downloads per scenario; median (default 3)")
    p.add_argument("--hold", type=int, default=1000, help="idle connections for RSS per connection (default 1000)")
    p.add_argument("--hold-max", type=int, default=10000, help="idle connections to hold at once (default 10000)")
    p.add_argument(
        "--scenarios",
        type=_scenarios,
        default="".join(report.SCENARIOS),
        help="which of A-G to run, e.g. EF or E,G (default ABCDEFG)",
    )
    p.add_argument(
        "--parsers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the HTTP parsers, httptools vs h11 (default on; about 30 s)",
    )
    p.add_argument(
        "--config-sizes",
        default="1000,10000",
        help="workload counts for the config push rows (control -> ztunnel, file source); '' skips them "
        "(default 1000,10000; about 1 minute)",
    )
    p.add_argument(
        "--push-probe",
        type=int,
        default=push_probe.WORKLOADS,
        help="pods pushed into the iptables lab while wrk -c1 runs through C (push_probe.py); 0 skips it "
        f"(default {push_probe.WORKLOADS:,}; about 40 s)",
    )
    p.add_argument(
        "--enrollment-flips",
        type=int,
        default=10,
        help="label/unlabel rounds per backend for the enrollment rows; 0 skips them (default 10)",
    )
    p.add_argument(
        "--enrollment-bulk",
        type=int,
        default=100,
        help="pods whose namespace is labelled at once (default 100; 0: none)",
    )
    p.add_argument(
        "--lab-id",
        default="bench",
        help="lab id (default bench). MESHLET_LAB is not followed: the benchmark brings its labs up and takes them "
        "down, and must never take yours",
    )
    p.add_argument(
        "--ztunnel-arg",
        dest="ztunnel_args",
        action="append",
        default=[],
        metavar="ARG",
        help="one more ztunnel argument for the labs (`meshlet lab up --ztunnel-arg`); repeat it, e.g. "
        "--ztunnel-arg=--http-upstream-idle-timeout --ztunnel-arg=0",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help=f"where latest.json and latest.png go (default {RESULTS})")
    p.add_argument("--keep-workdir", action="store_true", help="keep configs, certs and server logs")
    return p.parse_args(argv)


def _scenarios(text: str) -> str:
    """'E,F', 'ef' or 'EF' -> 'EF'; an unknown letter is an error naming it."""
    letters = text.upper().replace(",", "").replace(" ", "")
    unknown = sorted(set(letters) - set(report.SCENARIOS))
    if unknown or not letters:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown or text!r}: choose from {report.SCENARIOS}")
    return letters


def _cmd(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((proc.stdout or proc.stderr).strip().splitlines() or ["?"])[0]


def machine() -> dict[str, Any]:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "?",
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "commit": _cmd(["git", "-C", str(Path(__file__).parents[2]), "describe", "--always", "--dirty"]),
        "tools": {
            "wrk": _cmd(["wrk", "--version"]),
            "haproxy": _cmd(["haproxy", "-v"]),
            "nginx": _cmd(["nginx", "-v"]),
            "curl": _cmd(["curl", "--version"]),
        },
    }


_T0 = time.monotonic()


def _say(msg: str) -> None:
    err.print(f"[dim][bench {time.monotonic() - _T0:4.0f}s][/dim] {msg}")


def _pods(lab: Lab) -> dict[str, Pod]:
    pods = lab.pods()
    for name, enrolled in (("web-1a", True), ("web-1b", False), ("web-2a", True), ("web-2b", False)):
        if name not in pods or pods[name].enrolled != enrolled:
            raise BenchError(f"lab {lab.lab_id!r} has no pod {name} (enrolled={enrolled}): {sorted(pods)}")
    return pods


class Run:
    """One benchmark run: the scenarios' results, the reasons for those missing, what to stop."""

    def __init__(self, lab: Lab, settings: Settings, workdir: Path, wanted: str, push_workloads: int = 0) -> None:
        self.lab, self.settings, self.workdir, self.wanted = lab, settings, workdir, wanted
        self.push_workloads = push_workloads
        self.push_probe: dict[str, Any] | None = None
        self.results: dict[str, dict[str, Any] | None] = dict.fromkeys(report.SCENARIOS)
        self.unavailable: dict[str, str] = {
            s: "not selected (--scenarios)" for s in report.SCENARIOS if s not in wanted
        }
        self.started: list[subprocess.Popen[str]] = []

    def _measure(self, sc: Scenario) -> None:
        _say(f"[bold]{sc.key}: {sc.title}[/bold] ({sc.client} -> {sc.url('')})")
        try:
            self.results[sc.key] = measure(self.lab, sc, self.settings, _say)
        except (BenchError, WorkloadError) as exc:
            self.unavailable[sc.key] = f"failed: {exc}"
            _say(f"[red]{sc.key} failed: {exc}[/red]")

    def _stop_all(self) -> None:
        while self.started:
            stop(self.started.pop())

    def _services(self, server: str) -> services.BenchServices | str:
        """The benchmark's Services (services.py), or why they could not be written."""
        try:
            return services.add(self.lab, server)
        except (BenchError, OSError) as exc:
            _say(f"[yellow]benchmark Services not added: {exc}[/yellow]")
            return f"cannot add the benchmark's Services: {exc}"

    def iptables_lab(self) -> None:
        """A, B, C and F share one lab brought up with the iptables backend."""
        todo = [s for s in "ABCF" if s in self.wanted]
        if not todo:
            return
        _say(f"lab {self.lab.lab_id}: up --redirect iptables")
        try:
            self.lab.up("iptables")
            pods = _pods(self.lab)
            for pod in ("web-2b", "web-2a"):
                self.started.append(nginx.start(self.lab, pod, self.workdir))
        except BenchError as exc:
            self.unavailable.update(dict.fromkeys(todo, f"lab failed: {exc}"))
            return
        if "A" in todo:
            self._measure(Scenario("A", "direct", "web-1b", pods["web-2b"].ip, nginx.PORT, {}))
        if "B" in todo:
            self._haproxy(pods, "B")
        if "F" in todo:
            self._haproxy(pods, "F")
        if "C" in todo:
            self._services("web-2a")  # C calls the pod IP; the only service port on :8081 is tcp-web
            self._measure(Scenario("C", "meshlet iptables", "web-1a", pods["web-2a"].ip, nginx.PORT, self._ztunnels()))
            if self.push_workloads and self.results["C"] is not None:
                self._push_probe(pods["web-2a"].ip)
        self._stop_all()
        self.lab.down()

    def _push_probe(self, server_ip: str) -> None:
        _say(f"C: wrk c=1 while {self.push_workloads:,} pods are pushed to both ztunnels")
        try:
            self.push_probe = push_probe.measure(self.lab, "web-1a", server_ip, self.push_workloads)
        except (BenchError, WorkloadError, OSError) as exc:
            self.push_probe = {"failed": str(exc)}
            _say(f"[red]push probe failed: {exc}[/red]")

    def _haproxy(self, pods: dict[str, Pod], key: str) -> None:
        """B (mode tcp) or F (mode http): the same pair of pods, certificates and ports, one pair at a time."""
        mode = "http" if key == "F" else "tcp"
        try:
            pair = haproxy.start_pair(
                self.lab, "web-1b", "web-2b", pods["web-2b"].ip, nginx.PORT, self.workdir, mode=mode
            )
        except BenchError as exc:
            self.unavailable[key] = f"failed: {exc}"
            return
        self.started += [pair.client, pair.server]
        proxies = {pods["web-1b"].node: pair.client.pid, pods["web-2b"].node: pair.server.pid}
        self._measure(Scenario(key, report.TITLES[key], "web-1b", "127.0.0.1", haproxy.CLIENT_PORT, proxies))
        for proc in (pair.client, pair.server):  # idle haproxies take no CPU, but C gets the machine alone
            stop(proc)
            self.started.remove(proc)

    def _ztunnels(self) -> dict[str, int]:
        try:
            return self.lab.node_proxies()
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(f"cannot read the node proxies' PIDs: {exc}") from exc

    def ebpf_lab(self) -> None:
        """D, E and G: each in its own lab with `--redirect ebpf` (fresh ztunnels, as C's: E measured right after
        D's 10,000 held connections ran slower, on proxies grown to twice their idle RSS); recorded as
        unavailable, with the CLI's reason, when refused.

        D calls the server pod's IP on nginx's :8081 (L4). E calls the `bench-http` Service (port `http`,
        to nginx's :8082 in the same pod): both ztunnels handle that at L7. G is E with an HTTPRoute on that
        Service and TrafficPolicies in force first (routing.py): G/E is what routing costs per request."""
        todo = [s for s in "DEG" if s in self.wanted]
        for i, key in enumerate(todo):
            if not self._ebpf_scenario(key):
                for later in todo[i + 1 :]:  # the same refusal would come again: no second attempt
                    self.unavailable[later] = self.unavailable[key]
                return

    def _ebpf_scenario(self, key: str) -> bool:
        """Bring up the eBPF lab, measure D, E or G in it, take it down; False when the lab was refused."""
        _say(f"lab {self.lab.lab_id}: up --redirect ebpf (for {key})")
        try:
            self.lab.up("ebpf")
        except LabError as exc:
            self.unavailable[key] = f"`meshlet lab up --redirect ebpf` refused: {exc}"
            _say(f"[yellow]{key} unavailable: {exc}[/yellow]")
            return False
        try:
            pods = _pods(self.lab)
            ports = (nginx.PORT, nginx.L7_PORT) if key in "EG" else (nginx.PORT,)
            self.started.append(nginx.start(self.lab, "web-2a", self.workdir, ports))
            proxies = self._ztunnels()
        except BenchError as exc:
            self.unavailable[key] = f"lab failed: {exc}"
            return True
        svc = self._services("web-2a")  # D too: the only service port on :8081 is tcp-web, so D stays L4
        if key == "D":
            self._measure(Scenario("D", report.TITLES["D"], "web-1a", pods["web-2a"].ip, nginx.PORT, proxies))
        elif isinstance(svc, str):
            self.unavailable[key] = svc
        elif key == "G" and (why := self._routes(pods)):
            self.unavailable["G"] = why
        else:
            self._measure(Scenario(key, report.TITLES[key], "web-1a", svc.http_vip, svc.http_port, proxies))
        self._stop_all()
        self.lab.down()
        return True

    def _routes(self, pods: dict[str, Pod]) -> str:
        """G's HTTPRoute, backend Services and TrafficPolicies applied and in force on the client's node ztunnel;
        "" when they are, else why not."""
        namespace, node = pods["web-2a"].namespace, pods["web-1a"].node
        _say(f"G: lab apply the HTTPRoute {routing.ROUTE}, its backends and TrafficPolicies; waiting for {node}")
        try:
            routing.apply(self.lab, namespace, self.workdir)
            routing.wait_in_force(self.lab, node, namespace)
        except BenchError as exc:
            _say(f"[yellow]G: routing not in force: {exc}[/yellow]")
            return f"routing not in force: {exc}"
        return ""

    def cleanup(self) -> None:
        self._stop_all()
        _say(f"lab {self.lab.lab_id}: down")
        self.lab.down()


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: processes stopped, lab down


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if os.geteuid() != 0:
        err.print("[red]the benchmark builds a lab (network namespaces, cgroups): run it as root[/red]")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    named = os.environ.get("MESHLET_LAB")
    if named and named != args.lab_id:
        _say(f"MESHLET_LAB={named} is left alone: the benchmark uses lab {args.lab_id!r} (--lab-id)")
    # Everything the benchmark starts (lab daemons, servers, haproxy) inherits as many open files as this
    # process may have: the hard limit. Raising that needs CAP_SYS_RESOURCE, which a sandbox may not grant.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    settings = Settings(args.duration, args.bulk_runs, args.hold, args.hold_max)
    counts = {"hold": args.hold, "hold_max": args.hold_max}
    started_at = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="meshlet-bench-"))
    workdir.chmod(0o755)  # nginx's worker (nobody) reads the bodies here
    run = Run(Lab(args.lab_id, tuple(args.ztunnel_args)), settings, workdir, args.scenarios.upper(), args.push_probe)
    try:
        _say(f"writing the 1 KB and 100 MB bodies in {workdir}")
        nginx.write_site(workdir)
        run.iptables_lab()
        run.ebpf_lab()
    finally:
        run.cleanup()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    parsers = None
    if args.parsers:  # after the labs are down: the machine is as quiet as it gets
        _say("HTTP parsers: httptools vs h11")
        parsers = http_parsers.measure()
    config_rows = None
    if args.config_sizes:
        _say(f"config push: {args.config_sizes} workloads, control -> one ztunnel")
        config_rows = config_scale.measure(sorted(int(n) for n in args.config_sizes.split(",")))
    enrollment_rows = None
    if args.enrollment_flips:
        _say(f"enrollment: {args.enrollment_flips} label flips and {args.enrollment_bulk} pods at once, per backend")
        enrollment_rows = enrollment.measure(["iptables", "ebpf"], args.enrollment_flips, args.enrollment_bulk)
    info["load_average_at_end"] = os.getloadavg()
    doc = report.document(run.results, run.unavailable, counts, _meta(args, info, started_at, t0))
    doc["http_parsers"] = parsers
    doc["config_push"] = config_rows
    doc["enrollment"] = enrollment_rows
    doc["push_probe"] = run.push_probe
    json_path, png_path = args.out / "latest.json", args.out / "latest.png"
    report.write_json(json_path, doc)
    missing = "".join(f"; {s} not measured" for s in report.SCENARIOS if not doc["scenarios"][s]["available"])
    subtitle = f"{started_at:%Y-%m-%d %H:%M} UTC, {info['cpu_count']} CPUs, wrk {args.duration:g}s{missing}"
    write_chart(png_path, {key: m["ratios"] for key, m in doc["metrics"].items()}, counts, subtitle)
    _print(doc, counts)
    if run.push_probe is not None:
        title = "c=1 during a config push[/bold] (wrk over the whole window; the push from each ztunnel's log)"
        console.print(f"\n[bold]{title}")
        if "failed" in run.push_probe:
            console.print(f"[red]failed:[/red] {run.push_probe['failed']}")
        else:
            quiet = (run.results.get("C") or {}).get("c1")
            console.print(push_probe.table(run.push_probe, quiet), markup=False, highlight=False)
    if enrollment_rows:
        console.print("\n[bold]enrollment[/bold] (store write -> the agent's state, from the agent's own clock)")
        console.print(enrollment.table(enrollment_rows), markup=False, highlight=False)
    if config_rows:
        console.print("\n[bold]config push[/bold] (store write -> applied at a ztunnel; RSS after the push)")
        console.print(config_scale.table(config_rows), markup=False, highlight=False)
    if parsers:
        console.print("\n[bold]HTTP parsers[/bold] (median ns per message, MB/s of wire data)")
        console.print(http_parsers.table(parsers), markup=False, highlight=False)
    console.print(f"\nJSON: {json_path}\nchart: {png_path}\n({doc['seconds']:.0f}s)")
    return 0


def _meta(args: argparse.Namespace, info: dict[str, Any], started_at: datetime.datetime, t0: float) -> dict[str, Any]:
    return {
        "started": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "machine": info,
        "settings": {
            "wrk_duration_s": args.duration,
            "bulk_runs": args.bulk_runs,
            "bulk_bytes": nginx.BULK_BYTES,
            "small_body_bytes": nginx.SMALL_BYTES,
            "hold": args.hold,
            "hold_max": args.hold_max,
            "haproxy_maxconn": haproxy.maxconn(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
            "lab_id": args.lab_id,
            "ztunnel_args": list(args.ztunnel_args),
        },
        "chart": "latest.png",
    }


def _print(doc: dict[str, Any], counts: dict[str, int]) -> None:
    vals = {key: m["values"] for key, m in doc["metrics"].items()}
    rats = {key: m["ratios"] for key, m in doc["metrics"].items()}
    console.print(report.table(vals, rats, counts))
    for s, sc in doc["scenarios"].items():
        if not sc["available"]:
            console.print(f"[yellow]{s} unavailable:[/yellow] {sc['reason']}")
    console.print("\n[bold]targets[/bold] (ratios from this run; nothing absolute is pass/fail)")
    for t in doc["targets"]:
        mark = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "[dim]not measured[/dim]"}[t["holds"]]
        v = t["value"]
        value = "" if v is None else f" ({v:,.0f} {t['unit']})" if t["unit"] == "held" else f" ({v:,.2f} {t['unit']})"
        console.print(f"  {t['scenario']}: {t['target']}: {mark}{value}")


if __name__ == "__main__":
    sys.exit(main())
