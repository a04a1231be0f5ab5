"""Traffic management in the source node's ztunnel, end to end on a lab, with both redirection backends (#15).

One lab per backend runs versioned apps (`lab up --apps`, MANIFEST) in the ambient namespace `shop`: echo-v1 (2
pods) and echo-v2 (1) behind the Services `echo`, `echo-v1` and `echo-v2`; two `steady` pods that share the
Services `retry`, `outlier` and `lazy` with one misbehaving pod each (`resetter` resets every 2nd request, `failer`
answers 503, `sleeper` answers after 500 ms: the app's ECHO_* steering); and `mirror`, a Service nothing calls.
Each test applies its HTTPRoute or TrafficPolicy with `meshlet lab apply -f`, waits until every node's ztunnel
holds it, drives load from the mesh pod web-1a (node1) with `tests.e2e.traffic_client` (keep-alive connections,
bounded counts), checks what the client saw, the pods' logs and the source ztunnel's metrics, and deletes what it
applied (waiting until the proxies dropped it), so the lab is left as found. The scaling test comes last.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import BACKENDS, Lab, lab_of, meshlet
from tests.e2e.mesh_helpers import samples
from tests.e2e.traffic_lab import (
    CLIENT_NODE,
    DEPLOYMENTS,
    IN_FORCE_TIMEOUT,
    MANIFEST,
    NS,
    Stream,
    apply,
    backend,
    by_deployment,
    canary,
    counter,
    deployment_manifest,
    deployment_of,
    errors,
    load,
    log_lines,
    pods_of,
    refresh,
    remove,
    requests_flagged,
    route,
    statuses,
    traffic_policy,
    write_text,
    write_yaml,
)


@pytest.fixture(scope="module", params=BACKENDS)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    apps = tmp_path_factory.mktemp("traffic") / "apps.yaml"
    apps.write_text(MANIFEST)
    with lab_of("--redirect", request.param, "--apps", str(apps)) as running:
        running.status["backend"] = request.param
        yield running


@pytest.fixture
def applied(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`applied(obj)` applies an object for the test; whatever it applied is deleted afterwards, even on failure."""
    paths: list[Path] = []

    def do(obj: dict[str, Any]) -> Path:
        path = apply(lab, tmp_path, obj)
        if path not in paths:
            paths.append(path)
        return path

    yield do
    for path in paths:
        remove(lab, path)


# ----- the tests -----


def test_the_apps_run_and_each_service_reaches_its_pods(lab: Lab) -> None:
    for deployment, (replicas, _, _) in DEPLOYMENTS.items():
        assert len(pods_of(lab, deployment)) == replicas, (deployment, lab.status["pods"])
    shop = [p for p in lab.status["pods"] if p["namespace"] == NS]
    assert all(p["enrolled"] and p["app"] == "running" for p in shop), shop
    expected = {"echo": {"echo-v1", "echo-v2"}, "echo-v1": {"echo-v1"}, "echo-v2": {"echo-v2"},
                "mirror": {"mirror"}, "retry": {"steady", "resetter"}}  # fmt: skip
    for service, deployments in expected.items():
        results = load(lab, service, 12, 1, "/hello")
        if service == "retry":  # the resetter resets every second request it gets: no route retries them yet
            results = [r for r in results if r["status"] == 200]
        assert statuses(results) == {200: len(results)}, (service, errors(results))
        assert set(by_deployment(results)) == deployments, (service, by_deployment(results))
    assert {r["status"] for r in load(lab, "outlier", 6, 1, "/x")} == {200, 503}, "the failer answers 503"


def test_meshlet_routes_lists_routes_per_service_with_backends_weights_and_status(
    lab: Lab, applied: Callable[..., Path]
) -> None:
    applied(canary(90, 10))
    applied(route("broken", "echo-v2", {"backendRefs": [backend("nowhere")]}))

    def routes(*args: str) -> list[dict[str, Any]]:
        out = meshlet("routes", "--lab", lab.id, "--node", CLIENT_NODE, "-o", "json", *args).stdout
        result: list[dict[str, Any]] = json.loads(out)
        return result

    rows = {row["route"]: row for row in routes("-n", NS)}
    assert set(rows) >= {"shop/canary", "shop/broken"}, rows
    row = rows["shop/canary"]
    assert (row["service"], row["routePort"]) == ("shop/echo", 80)
    assert [b["weight"] for b in row["rules"][1]["backends"]] == [90, 10]
    assert [b["service"] for b in row["rules"][1]["backends"]] == ["shop/echo-v1", "shop/echo-v2"]
    conditions = {c["type"]: c for c in row["conditions"]}
    assert (conditions["Accepted"]["status"], conditions["ResolvedRefs"]["status"]) == ("True", "True"), row
    broken = {c["type"]: c for c in rows["shop/broken"]["conditions"]}
    assert broken["ResolvedRefs"]["status"] == "False" and broken["ResolvedRefs"]["reason"] == "BackendNotFound"
    assert routes("-n", "mesh") == []
    assert {r["route"] for r in routes()} >= {"shop/canary", "shop/broken"}
    table = meshlet("routes", "--lab", lab.id, "--node", CLIENT_NODE, "-n", NS).stdout
    words = set(table.split())  # the table wraps its cells to the terminal's width
    assert {"shop/canary", "shop/broken", "(90),", "(10)", "(BackendNotFound)"} <= words, table


def test_canary_weights_a_header_and_a_weight_change_within_a_second(
    lab: Lab, applied: Callable[..., Path], tmp_path: Path
) -> None:
    applied(canary(90, 10))
    results = load(lab, "echo", 2000, 4, "/canary/{i}")
    assert errors(results) == []
    share = by_deployment(results)["echo-v2"] / len(results)
    assert 0.07 <= share <= 0.13, f"v2 got {share:.1%} of 2000 requests, not 10% +- 3%"

    tester = load(lab, "echo", 50, 1, "/canary/tester", "-H", "x-canary: true")
    assert by_deployment(tester) == {"echo-v2": 50}, by_deployment(tester)

    stream = Stream(lab, "echo", seconds=6.0, path="/canary/switch")
    try:
        stream.wait_for(20)
        lab.run("apply", "-f", str(write_yaml(tmp_path / "canary-0-100.yaml", canary(0, 100))))
        written = (Path(lab.status["store"]) / "httproute.shop.canary.yaml").stat().st_mtime
        answers = stream.finish()
    finally:
        stream.stop()
    after = [a for a in answers if a["t"] > written]
    assert all(a["status"] == 200 for a in answers), Counter(a["status"] for a in answers)
    assert after and after[-1]["t"] - written > 1.5, "the client kept sending for more than 1 s after the change"
    last_v1 = max((a["t"] for a in after if deployment_of(a["pod"]) == "echo-v1"), default=written)
    assert last_v1 - written <= 1.0, f"v1 still answered {last_v1 - written:.2f}s after the weights became 0/100"
    tail = [deployment_of(a["pod"]) for a in after if a["t"] > written + 1.0]
    assert tail and set(tail) == {"echo-v2"}


def test_retries_hide_an_endpoint_resetting_half_its_connections(lab: Lab, applied: Callable[..., Path]) -> None:
    applied(route("retry", "retry", {"backendRefs": [backend("retry")],
                                     "retry": {"attempts": 3, "codes": [503], "backoff": "10ms"}}))  # fmt: skip
    resetter = next(iter(pods_of(lab, "resetter")))
    retries_before = counter(lab, "meshlet_upstream_retries_total", "retry")
    resets_before = len(log_lines(lab, resetter, "reset"))
    results = load(lab, "retry", 500, 4, "/flaky/{i}")
    assert errors(results) == [], f"{len(errors(results))} of 500 failed: {errors(results)[:5]}"
    resets = len(log_lines(lab, resetter, "reset")) - resets_before
    retries = counter(lab, "meshlet_upstream_retries_total", "retry") - retries_before
    assert resets > 20, f"the resetter reset only {resets} requests: it got too few to show anything"
    # Each reset had to be retried for the client to see no error; a replay that is not counted hides them.
    assert retries >= resets, f"{resets} requests were reset but {retries} retries counted by {CLIENT_NODE}"
    assert "resetter" in by_deployment(results), "the resetter's other requests are answered"


def test_a_request_timeout_answers_504_in_time(lab: Lab, applied: Callable[..., Path]) -> None:
    applied(route("timeout", "echo", {"backendRefs": [backend("echo")], "timeouts": {"request": "200ms"}}))
    flagged = requests_flagged(lab, "echo", "UT")
    slow = load(lab, "echo", 6, 1, "/slow?delay=1s")
    assert statuses(slow) == {504: 6}, slow
    assert all("upstream request timeout" in r.get("body", "") for r in slow), slow
    assert all(200 <= r["ms"] <= 300 for r in slow), [r["ms"] for r in slow]
    assert statuses(load(lab, "echo", 6, 1, "/quick")) == {200: 6}
    assert requests_flagged(lab, "echo", "UT") - flagged == 6


def test_a_backend_request_timeout_with_retries_answers_from_another_endpoint(
    lab: Lab, applied: Callable[..., Path]
) -> None:
    applied(route("lazy", "lazy", {"backendRefs": [backend("lazy")],
                                   "timeouts": {"request": "3s", "backendRequest": "250ms"},
                                   "retry": {"attempts": 2, "codes": [504], "backoff": "10ms"}}))  # fmt: skip
    sleeper = next(iter(pods_of(lab, "sleeper")))
    marker = f"/per-try-{time.monotonic_ns()}"
    retries_before = counter(lab, "meshlet_upstream_retries_total", "lazy")
    results = load(lab, "lazy", 30, 3, marker + "/{i}")
    assert errors(results) == [], errors(results)
    assert set(by_deployment(results)) == {"steady"}, "every answer comes from a fast endpoint"
    assert max(r["ms"] for r in results) < 3 * 250 + 300, [r["ms"] for r in results]
    tried = len(log_lines(lab, sleeper, marker))
    assert tried > 0, "the slow endpoint was tried (and given up on) at least once"
    assert counter(lab, "meshlet_upstream_retries_total", "lazy") - retries_before >= tried


def test_outlier_detection_ejects_a_failing_endpoint_for_the_ejection_time(
    lab: Lab, applied: Callable[..., Path]
) -> None:
    base = 3.0
    detection = {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": f"{base:g}s",
                 "maxEjectionPercent": 50}  # fmt: skip
    applied(traffic_policy("outlier", "outlier", outlierDetection=detection))
    ejections = counter(lab, "meshlet_outlier_ejections_total", "outlier")
    stream = Stream(lab, "outlier", seconds=base + 6, path="/outlier", gap=0.02)
    try:
        answers = stream.finish()
    finally:
        stream.stop()
    failing = [i for i, a in enumerate(answers) if deployment_of(a["pod"]) == "failer"]
    assert len(failing) >= 4, f"the failing endpoint answered {len(failing)} times in all"
    assert all(answers[i]["status"] == 503 for i in failing)
    ejected_at = answers[failing[2]]["t"]  # its 3rd consecutive 503
    back = answers[failing[3]]
    gap = back["t"] - ejected_at
    between = answers[failing[2] + 1 : failing[3]]
    assert gap >= base - 0.1, f"the ejected endpoint got a request {gap:.2f}s after its ejection"
    assert gap <= base + 1.0 + 1.0, f"the endpoint came back only {gap:.2f}s after its ejection (base {base}s)"
    assert len(between) > 50 and all(a["status"] == 200 for a in between), "the others served meanwhile"
    assert counter(lab, "meshlet_outlier_ejections_total", "outlier") - ejections >= 1


def test_least_request_sends_a_slow_endpoint_less_than_a_third(lab: Lab, applied: Callable[..., Path]) -> None:
    applied(traffic_policy("lazy", "lazy", loadBalancer={"simple": "LEAST_REQUEST"}))
    results = load(lab, "lazy", 300, 6, "/least/{i}")
    assert errors(results) == []
    share = by_deployment(results)["sleeper"] / len(results)
    # Round robin would give it exactly a third; the power of two choices sees its requests pile up.
    assert share < 0.3, f"the slow endpoint got {share:.1%} of the requests"


def test_a_rate_limit_of_10_per_second_burst_10_lets_10_of_100_through(lab: Lab, applied: Callable[..., Path]) -> None:
    applied(traffic_policy("limit", "echo", rateLimit={"requestsPerUnit": 10, "unit": "second", "burst": 10}))
    limited = counter(lab, "meshlet_rate_limited_total", "echo")
    flagged = requests_flagged(lab, "echo", "RL")
    began = time.monotonic()
    results = load(lab, "echo", 100, 20, "/limited/{i}")
    spent = time.monotonic() - began
    counts = statuses(results)
    assert set(counts) <= {200, 429}, counts
    assert 9 <= counts[200] <= 11, f"{counts[200]} of 100 passed ({spent:.2f}s for the client run)"
    refused = [r for r in results if r["status"] == 429]
    assert all({"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.get("headers", {}))
               for r in refused), refused[:3]  # fmt: skip
    assert counter(lab, "meshlet_rate_limited_total", "echo") - limited == counts[429]
    assert requests_flagged(lab, "echo", "RL") - flagged == counts[429]


def test_circuit_breaking_overflows_with_503_flagged_uo(lab: Lab, applied: Callable[..., Path]) -> None:
    applied(traffic_policy("breaker", "echo", connectionPool={"tcp": {"maxConnections": 1},
                                                              "http": {"http1MaxPendingRequests": 1}}))  # fmt: skip
    overflows = counter(lab, "meshlet_upstream_overflows_total", "echo")
    flagged = requests_flagged(lab, "echo", "UO")
    results = load(lab, "echo", 64, 16, "/breaker/{i}?delay=100ms")
    counts = statuses(results)
    assert set(counts) <= {200, 503} and counts[503] > 0 and counts[200] > 0, counts
    assert requests_flagged(lab, "echo", "UO") - flagged == counts[503]
    assert counter(lab, "meshlet_upstream_overflows_total", "echo") - overflows == counts[503]
    kinds = {labels.get("kind") for labels, _ in samples(lab, CLIENT_NODE, "meshlet_upstream_overflows_total")
             if labels.get("destination_service_name") == "echo"}  # fmt: skip
    assert kinds and kinds <= {"connections", "pending", "retries"}, kinds


def test_mirrored_copies_reach_the_mirror_service_and_never_the_client(lab: Lab, applied: Callable[..., Path]) -> None:
    applied(route("mirrored", "echo", {"backendRefs": [backend("echo-v1")], "filters": [
        {"type": "RequestMirror", "requestMirror": {"backendRef": backend("mirror")}}]}))  # fmt: skip
    mirror = next(iter(pods_of(lab, "mirror")))
    marker = f"/mirrored-{time.monotonic_ns()}"
    results = load(lab, "echo", 20, 2, marker + "/{i}")
    assert errors(results) == [] and by_deployment(results) == {"echo-v1": 20}, by_deployment(results)
    wait_for(lambda: len(log_lines(lab, mirror, marker)) >= 20, 5, "the 20 mirrored copies in the mirror's log")
    copies = log_lines(lab, mirror, marker)
    assert len(copies) == 20 and {f"{marker}/{i} " in " ".join(copies) for i in range(20)} == {True}, copies


def test_consistent_hash_keeps_a_key_on_its_pod_and_moves_few_when_one_goes(
    lab: Lab, applied: Callable[..., Path], tmp_path: Path
) -> None:
    applied(traffic_policy("sticky", "echo", loadBalancer={"consistentHash": {"httpHeaderName": "x-user"}}))
    same = load(lab, "echo", 1000, 4, "/sticky", "-H", "x-user: alice")
    assert errors(same) == [] and len({r["pod"] for r in same}) == 1, Counter(r["pod"] for r in same)

    # One more echo-v1 pod (4 endpoints), keys placed, then that pod goes again: the lab ends as it began.
    keys = 90
    placed: dict[str, str] = {}

    def placement() -> dict[str, str]:
        results = load(lab, "echo", keys, 3, "/sticky/{i}", "--key-header", "x-user", "--keys", str(keys))
        assert errors(results) == [], errors(results)[:3]
        placed.update({r["key"]: r["pod"] for r in results})
        return placed

    replicas, labels, _ = DEPLOYMENTS["echo-v1"]
    v1_pods = pods_of(lab, "echo-v1")
    more = write_text(tmp_path / "echo-v1-more.yaml", deployment_manifest("echo-v1", replicas + 1, labels))
    as_before = write_text(tmp_path / "echo-v1.yaml", deployment_manifest("echo-v1", replicas, labels))
    lab.run("apply", "-f", str(more))
    try:
        refresh(lab)
        (added,) = pods_of(lab, "echo-v1") - v1_pods
        wait_for(lambda: added in placement().values(), IN_FORCE_TIMEOUT, f"keys to reach the new pod {added}")
        before = dict(placed)
        endpoints = len(set(before.values()))
        assert endpoints == 4, f"{keys} keys spread over {endpoints} of 4 pods"
        lab.run("apply", "-f", str(as_before))
        placed.clear()
        wait_for(lambda: added not in placement().values(), IN_FORCE_TIMEOUT, f"no key to reach {added} any more")
        moved = [k for k in before if before[k] != placed[k]]
        assert len(moved) <= keys / endpoints + 0.1 * keys, f"{len(moved)} of {keys} keys moved when 1 of 4 pods went"
        stayed = [k for k in before if before[k] != added and before[k] != placed[k]]
        assert len(stayed) <= 0.05 * keys, f"{len(stayed)} keys of the pods that stayed moved"
    finally:
        lab.run("apply", "-f", str(as_before))
        refresh(lab)
    assert pods_of(lab, "echo-v1") == v1_pods
