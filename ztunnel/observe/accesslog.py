"""The access log: one JSON object per line per request (L7) and per proxied connection (L4), off by default.

Lines go to the `meshlet.access` logger, which writes them alone on their line to stderr (no level or
timestamp prefix: each line parses as JSON), beside ztunnel's other logs. It is switched at start
(`--access-log`) and at runtime (admin `POST /logging?access=on|off`); while off, recording costs one
attribute test. Field names follow Envoy's access log where one exists (`response_code`, `bytes_received`,
`upstream_host`, `downstream_remote_address`, ...); bytes use Envoy's direction: received = from the
client, sent = to the client.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from ztunnel.metrics import TCP_LABELS, Labels, Peer
from ztunnel.observe.trace import TraceContext

LOGGER = "meshlet.access"


def rfc3339(epoch: float) -> str:
    """`epoch` as RFC 3339 in UTC with milliseconds, e.g. 2026-11-28T21:59:04.123Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class RequestRecord:
    """What the L7 engine knows of one finished request."""

    start: float
    """time.time() when the request's first byte arrived."""
    duration_ms: float
    method: str
    path: str
    protocol: str
    """The request's HTTP version, e.g. HTTP/1.1."""
    response_code: int
    reporter: str
    """`source` (the client's node proxy) or `destination` (the server's)."""
    source: Peer
    destination: Peer
    response_flags: str = "-"
    bytes_received: int = 0
    bytes_sent: int = 0
    upstream_host: str = ""
    downstream_remote_address: str = ""
    authority: str = ""
    user_agent: str = ""
    x_request_id: str = ""
    trace: TraceContext | None = None
    decision: str = ""
    """The authorization decision: `allow`, `deny` or "" (none taken on this side)."""
    policy: str = ""
    """The policy that decided (`namespace/name`), "" when none matched."""
    audit: bool = False
    """An AUDIT policy matched the request."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other field to log as it is."""


class AccessLog:
    """Writes access log lines while enabled."""

    def __init__(self, stream: TextIO | None = None, name: str = LOGGER) -> None:
        """Lines go to logger `name`, given a handler writing to `stream` (stderr when None) unless it has one."""
        self.enabled = False
        self.log = logging.getLogger(name)
        self.log.propagate = False  # its lines carry no prefix: they are not also written by the root handler
        self.log.setLevel(logging.INFO)
        if stream is not None or not self.log.handlers:
            for old in list(self.log.handlers):
                self.log.removeHandler(old)
            handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.log.addHandler(handler)

    def set(self, on: bool) -> None:
        self.enabled = on

    def write(self, entry: dict[str, Any]) -> None:
        """One line: `entry` as compact JSON (any non-JSON value as its text)."""
        self.log.info(json.dumps(entry, separators=(",", ":"), default=str, ensure_ascii=False))

    def request(self, r: RequestRecord) -> None:
        """Log a finished request (nothing while disabled)."""
        if not self.enabled:
            return
        entry: dict[str, Any] = {
            "kind": "request",
            "start_time": rfc3339(r.start),
            "reporter": r.reporter,
            "method": r.method,
            "path": r.path,
            "protocol": r.protocol,
            "response_code": r.response_code,
            "response_flags": r.response_flags,
            "bytes_received": r.bytes_received,
            "bytes_sent": r.bytes_sent,
            "duration": round(r.duration_ms, 3),
            "upstream_host": r.upstream_host,
            "downstream_remote_address": r.downstream_remote_address,
            "authority": r.authority,
            "user_agent": r.user_agent,
            "x_request_id": r.x_request_id,
            **_peer("source", r.source),
            **_peer("destination", r.destination),
            "authz_decision": r.decision,
            "authz_policy": r.policy,
        }
        if r.trace is not None:
            entry.update(
                traceparent=r.trace.header(),
                trace_id=r.trace.trace_id,
                span_id=r.trace.span_id,
                parent_span_id=r.trace.parent_id,
            )
        if r.audit:
            entry["audit"] = True
        entry.update(r.extra)
        self.write(entry)

    def connection(
        self,
        direction: str,
        started: float,
        describe: str,
        labels: Labels | None,
        bytes_received: int,
        bytes_sent: int,
        failure: str = "",
        upstream_host: str = "",
    ) -> None:
        """Log a finished L4 connection (nothing while disabled). `labels` is its TCP label set (None when it
        failed before it had one), `failure` the reason it failed ("" when it did not)."""
        if not self.enabled:
            return
        now = time.time()
        values = dict(zip(TCP_LABELS, labels, strict=True)) if labels else {}
        entry: dict[str, Any] = {
            "kind": "connection",
            "start_time": rfc3339(started),
            "duration": round((now - started) * 1000, 3),
            "direction": direction,
            "connection": describe,
            "bytes_received": bytes_received,
            "bytes_sent": bytes_sent,
            "response_flags": values.get("response_flags", "-"),
        }
        if upstream_host:
            entry["upstream_host"] = upstream_host
        for end in ("source", "destination"):
            for key in ("workload", "workload_namespace", "principal"):
                if (value := values.get(f"{end}_{key}")) is not None:
                    entry[f"{end}_{key}"] = value
        if values:
            entry["reporter"] = values["reporter"]
            entry["destination_service"] = values["destination_service"]
            entry["connection_security_policy"] = values["connection_security_policy"]
        if failure:
            entry["failure"] = failure
        self.write(entry)


def _peer(end: str, peer: Peer) -> dict[str, str]:
    return {
        f"{end}_workload": peer.workload,
        f"{end}_workload_namespace": peer.namespace,
        f"{end}_principal": peer.principal,
    }


ACCESS_LOG = AccessLog()
"""The process's access log (the relay and the L7 engine write here; admin switches it)."""
