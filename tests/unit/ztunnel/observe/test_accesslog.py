"""The JSON access log: one parseable line per request and per connection, only while enabled, switched
from admin at runtime."""

from __future__ import annotations

import io
import json
import logging
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ztunnel.admin import Admin
from ztunnel.metrics import Metrics, Peer, tcp_labels, with_flags
from ztunnel.observe.accesslog import ACCESS_LOG, AccessLog, RequestRecord
from ztunnel.observe.trace import child, parse

CLIENT = Peer("productpage-v1", "shop", "spiffe://cluster.local/ns/shop/sa/productpage")
SERVER = Peer("reviews-v2", "shop", "spiffe://cluster.local/ns/shop/sa/reviews")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


def record(**over: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "start": 1_800_000_000.25,
        "duration_ms": 12.3456,
        "method": "GET",
        "path": '/reviews/1?x="y"',
        "protocol": "HTTP/1.1",
        "response_code": 200,
        "reporter": "destination",
        "source": CLIENT,
        "destination": SERVER,
        "bytes_received": 10,
        "bytes_sent": 2000,
        "upstream_host": "10.0.0.7:9080",
        "downstream_remote_address": "10.0.0.5:40000",
        "authority": "reviews:9080",
        "user_agent": "curl/8",
        "x_request_id": "rid-1",
        "trace": child(parse(TRACEPARENT)),
        "decision": "allow",
        "policy": "shop/allow-get",
    }
    fields.update(over)
    return RequestRecord(**fields)


def test_nothing_is_written_while_disabled() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, name="test.access.off")
    log.request(record())
    log.connection("inbound", 0.0, "a -> b", None, 1, 2)
    assert stream.getvalue() == ""


def test_a_request_line_is_json_with_envoys_names_and_the_callers_trace() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, name="test.access.request")
    log.set(True)
    log.request(record())
    log.request(record(response_code=403, decision="deny", audit=True, trace=None))

    first, second = lines(stream)
    assert first["start_time"] == "2027-01-15T08:00:00.250Z"
    assert (first["method"], first["path"], first["protocol"]) == ("GET", '/reviews/1?x="y"', "HTTP/1.1")
    assert (first["response_code"], first["response_flags"], first["duration"]) == (200, "-", 12.346)
    assert (first["bytes_received"], first["bytes_sent"]) == (10, 2000)
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first["parent_span_id"] == "00f067aa0ba902b7" and len(first["span_id"]) == 16
    assert first["traceparent"] == f"00-{first['trace_id']}-{first['span_id']}-01"
    assert first["source_workload"] == "productpage-v1" and first["destination_principal"] == SERVER.principal
    assert (first["authz_decision"], first["authz_policy"], first["x_request_id"]) == (
        "allow",
        "shop/allow-get",
        "rid-1",
    )
    assert "audit" not in first
    assert (second["response_code"], second["authz_decision"], second["audit"]) == (403, "deny", True)
    assert "trace_id" not in second


def test_a_connection_line_names_both_ends_and_why_it_failed() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, name="test.access.connection")
    log.set(True)
    labels = with_flags(tcp_labels("destination", CLIENT, SERVER, None, True), "DENY")
    started = time.time() - 1.5
    log.connection("inbound", started, "10.0.0.5 -> 10.0.0.7:9080", labels, 5, 0, "denied")
    log.connection("outbound", started, "10.0.0.5 -> 10.0.0.9:80", None, 0, 0, "no_route")

    denied, unrouted = lines(stream)
    assert (denied["response_flags"], denied["failure"], denied["reporter"]) == ("DENY", "denied", "destination")
    assert (denied["source_principal"], denied["destination_workload"]) == (CLIENT.principal, "reviews-v2")
    assert denied["connection_security_policy"] == "mutual_tls"
    assert (denied["bytes_received"], denied["bytes_sent"], denied["connection"]) == (5, 0, "10.0.0.5 -> 10.0.0.7:9080")
    assert 1500 <= denied["duration"] < 60_000  # milliseconds
    assert (unrouted["failure"], unrouted["response_flags"]) == ("no_route", "-")


@pytest.mark.asyncio
async def test_admin_switches_the_access_log_at_runtime() -> None:
    ctx = SimpleNamespace(metrics=Metrics(), tunnels=set(), pods={}, pool=None)
    admin = Admin(cast(Any, ctx), cast(Any, SimpleNamespace()), cast(Any, SimpleNamespace()), lambda: None)
    was = ACCESS_LOG.enabled
    try:
        async with TestClient(TestServer(admin.admin_app())) as client:
            on = await client.post("/logging?access=on")
            assert (on.status, (await on.text()).splitlines()[-1], ACCESS_LOG.enabled) == (200, "access: on", True)
            off = await client.post("/logging?access=off")
            assert (off.status, (await off.text()).splitlines()[-1], ACCESS_LOG.enabled) == (200, "access: off", False)
            bad = await client.post("/logging?access=maybe")
            assert bad.status == 400 and "maybe" in await bad.text()
            assert ACCESS_LOG.enabled is False
    finally:
        ACCESS_LOG.set(was)


@pytest.mark.asyncio
async def test_admin_changes_the_log_level_at_runtime_and_refuses_a_level_that_is_not_one() -> None:
    ctx = SimpleNamespace(metrics=Metrics(), tunnels=set(), pods={}, pool=None)
    admin = Admin(cast(Any, ctx), cast(Any, SimpleNamespace()), cast(Any, SimpleNamespace()), lambda: None)
    root = logging.getLogger()
    was = root.level
    try:
        async with TestClient(TestServer(admin.admin_app())) as client:
            debug = await client.post("/logging?level=DEBUG")
            assert debug.status == 200 and (await debug.text()).splitlines()[0] == "level: debug"
            assert root.getEffectiveLevel() == logging.DEBUG
            bad = await client.post("/logging?level=loud")
            assert bad.status == 400 and "expected one of debug, info, warning, error" in await bad.text()
            assert root.getEffectiveLevel() == logging.DEBUG  # unchanged
            asked = await client.post("/logging")
            assert (await asked.text()).splitlines()[0] == "level: debug"
    finally:
        root.setLevel(was)
