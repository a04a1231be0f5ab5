"""The steering conventions of the sample app, pure: what `meshlet.lab.app` reads off a request to decide
how to answer. They follow the Gateway API conformance echo server (`echo-basic`), so tests written
against its conventions work against a lab pod:

- the echo answer: JSON with the request's path (and query), host, method, protocol and headers (names in
  canonical form, values as lists) next to the pod's identity;
- `?delay=<duration>` (Go duration syntax: `200ms`, `1s`, `1m30s`) waits that long before answering, here
  capped at MAX_DELAY so a typo cannot park a thread for hours;
- request header `X-Echo-Set-Header: Name:value,Name2:value2` adds those response headers;
- `/retry/...?uuid=U&succeedAfter=K[&responseCode=C]` fails the first K requests carrying uuid U, then
  succeeds; the per-uuid counts are kept for at most MAX_RETRY_KEYS uuids (least recently used go first).

One pod can also be made to misbehave as a whole, which no request parameter can do when requests go through a
Service and the mesh picks the endpoint (`Faults`, from the container's environment, set in a Deployment):
`ECHO_DELAY=<duration>` makes every answer slow, `ECHO_STATUS=<code>` answers every request with that code,
`ECHO_RESET_EVERY=<n>` resets the connection of every n-th request without answering (the readiness probe `/healthz`
is spared by all three, so the pod still becomes ready).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_DELAY = 30.0
MAX_RETRY_KEYS = 10_000
SET_HEADER = "X-Echo-Set-Header"
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_duration(text: str) -> float:
    """Seconds of a Go-style duration (`300ms`, `1.5s`, `1m30s`, `0`); ValueError naming the problem, or when
    it is over MAX_DELAY."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if part is None:
            raise ValueError(f"delay {text!r} is not a duration such as 200ms, 1s or 1m30s")
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if not text:
        raise ValueError("delay is empty: give a duration such as 200ms or 1s")
    if total > MAX_DELAY:
        raise ValueError(f"delay {text!r} is over the app's limit of {MAX_DELAY:g}s")
    return total


def set_headers(values: Iterable[str]) -> list[tuple[str, str]]:
    """The response headers that `X-Echo-Set-Header` values ask for, in order; a name repeated within them
    gets its values joined by `,` (as echo-basic does). Entries whose name is not an HTTP token are skipped:
    they could not be sent."""
    out: dict[str, str] = {}
    for value in values:
        for entry in value.split(","):
            name, _, val = entry.strip().partition(":")
            name, val = name.strip(), val.strip()
            if not _TOKEN.fullmatch(name):
                continue
            out[name] = f"{out[name]},{val}" if name in out else val
    return list(out.items())


def canonical(name: str) -> str:
    """`x-request-id` -> `X-Request-Id`: how echo-basic (Go's net/http) spells header names."""
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.split("-"))


def echo_answer(
    identity: Mapping[str, str], method: str, target: str, proto: str, headers: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """The JSON the app echoes: echo-basic's fields (path is the request target, query included) plus the
    query parsed, so tests need not parse it."""
    grouped: dict[str, list[str]] = {}
    host = ""
    for name, value in headers:
        grouped.setdefault(canonical(name), []).append(value)
        if name.lower() == "host" and not host:
            host = value
    url = urlsplit(target)
    return {
        "path": target,
        "query": parse_qs(url.query, keep_blank_values=True),
        "host": host,
        "method": method,
        "proto": proto,
        "headers": grouped,
        "namespace": identity.get("namespace", ""),
        "pod": identity.get("pod", ""),
        "node": identity.get("node", ""),
        "ip": identity.get("ip", ""),
    }


@dataclass(frozen=True, slots=True)
class RetryAsk:
    """What one `/retry/...` request asks for."""

    uuid: str
    succeed_after: int
    response_code: int | None
    """None: fail by resetting the connection."""


def retry_ask(query: Mapping[str, list[str]]) -> RetryAsk:
    """The `/retry` parameters of a parsed query; ValueError naming the one that is wrong."""
    uuid = query.get("uuid", [""])[0]
    if not uuid or len(uuid) > 128:
        raise ValueError("retry needs ?uuid=<id> (1-128 characters) to count requests by")
    after = query.get("succeedAfter", ["1"])[0]
    if not (after.isascii() and after.isdigit()) or int(after) > 1000:
        raise ValueError(f"succeedAfter {after[:20]!r} must be a number in 0..1000")
    code_text = query.get("responseCode", [""])[0]
    code: int | None = None
    if code_text:
        if not (code_text.isascii() and code_text.isdigit() and 200 <= int(code_text) <= 599):
            raise ValueError(f"responseCode {code_text[:20]!r} must be a number in 200..599")
        code = int(code_text)
    return RetryAsk(uuid, int(after), code)


class RetryBook:
    """How many requests each uuid has made, thread-safe and bounded (least recently used uuids are dropped)."""

    def __init__(self, max_keys: int = MAX_RETRY_KEYS) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._max = max_keys
        self._lock = threading.Lock()

    def should_fail(self, uuid: str, succeed_after: int) -> bool:
        """Count one more request for `uuid`; True while it is among the first `succeed_after`."""
        with self._lock:
            count = self._seen.pop(uuid, 0) + 1
            self._seen[uuid] = count
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return count <= succeed_after


FAULT_VARIABLES = ("ECHO_DELAY", "ECHO_STATUS", "ECHO_RESET_EVERY")


@dataclass(frozen=True, slots=True)
class Faults:
    """How the whole pod misbehaves, from its environment: every request (but the readiness probe) waits `delay`
    seconds, then every `reset_every`-th one is reset, and the others are answered `status` when set."""

    delay: float = 0.0
    status: int | None = None
    reset_every: int = 0
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1), compare=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Faults:
        """The faults the ECHO_* variables ask for; ValueError naming the variable that is wrong."""
        delay = parse_duration(env["ECHO_DELAY"]) if env.get("ECHO_DELAY") else 0.0
        status_text, every_text = env.get("ECHO_STATUS", ""), env.get("ECHO_RESET_EVERY", "")
        status: int | None = None
        if status_text:
            if not (status_text.isascii() and status_text.isdigit() and 200 <= int(status_text) <= 599):
                raise ValueError(f"ECHO_STATUS {status_text[:20]!r} must be a status code in 200..599")
            status = int(status_text)
        if every_text and not (every_text.isascii() and every_text.isdigit() and int(every_text) >= 1):
            raise ValueError(f"ECHO_RESET_EVERY {every_text[:20]!r} must be a number of requests, 1 or more")
        return cls(delay, status, int(every_text or 0))

    @property
    def any(self) -> bool:
        return bool(self.delay or self.status is not None or self.reset_every)

    def reset_now(self) -> bool:
        """Count one request; True when it is the one of every `reset_every` to reset. next() on a count is atomic
        under the GIL, so the connections' threads share it without a lock."""
        return self.reset_every > 0 and next(self._counter) % self.reset_every == 0
