"""HTTPRoute routing decisions as pure functions: which rule a request takes, which backend, what filters do.

Gateway API (HTTPRoute v1, read for semantics) fixes these outcomes, which the data path maps to responses:
- no rule of any route attached to the Service matches the request: 404 (`NoRoute`);
- the chosen rule has no backend, every weight is 0, or the picked backend does not resolve (unknown Service or
  port, or another namespace without ReferenceGrant): 500 (`BackendError`);
- the backend resolves but has no ready endpoint: 503 (`NO_ENDPOINTS`).

Precedence (the spec's HTTPRouteRule `matches` rules, in our words): among every match of every route attached to
the Service that fits the request, an Exact path beats a PathPrefix, and a longer prefix a shorter one (a regular
expression, whose ranking the spec leaves to implementations, ranks below any prefix); then a match with a method
beats one without, then more header matches, then more query parameter matches. What still ties goes to the oldest
route (creation timestamp; a route without one counts as newest), then to the first by `namespace/name`, then to the
first rule and the first match within it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from meshlet_contracts.regex import compile_re2
from meshlet_contracts.routes import (
    BackendRef,
    HeaderModifier,
    HTTPRoute,
    PathMatch,
    PathModifier,
    RequestRedirect,
    RouteMatch,
    RouteRule,
    URLRewrite,
    ValueMatch,
)

Headers = list[tuple[bytes, bytes]]
"""As `ztunnel.l7.messages.Headers`: names as received, in order."""

NO_ROUTE = 404
INVALID_BACKEND = 500
NO_ENDPOINTS = 503
_PATH_RANK = {"Exact": 2, "PathPrefix": 1, "RegularExpression": 0}
_WELL_KNOWN_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Match:
    """The rule a request takes, and the match that chose it (URL rewrites and redirects need its path)."""

    route: HTTPRoute
    rule: RouteRule
    rule_index: int
    match: RouteMatch


@dataclass(frozen=True, slots=True)
class NoRoute:
    status: int = NO_ROUTE
    reason: str = "no HTTPRoute rule matches the request"


@dataclass(frozen=True, slots=True)
class BackendError:
    status: int = INVALID_BACKEND
    reason: str = ""


def split_target(target: str) -> tuple[str, str]:
    """A request target's path and query (`/a?b=1` -> (`/a`, `b=1`))."""
    path, _, query = target.partition("?")
    return path, query


def select(routes: Sequence[HTTPRoute], method: str, path: str, headers: Headers, query: str) -> Match | NoRoute:
    """The rule `routes` (`MeshIndex.routes_for` the request's Service and port) send this request to. `path` is the
    request target's path and `query` its query string (`split_target`), compared as received: no percent-decoding
    or dot-segment normalization is done here."""
    params = _first_params(query) if query else {}
    best: tuple[tuple[int, int, int, int, int], tuple[bool, str, str, str, int, int], Match] | None = None
    for route in routes:
        for rule_index, rule in enumerate(route.rules):
            for match_index, match in enumerate(rule.matches):
                if not matches(match, method, path, headers, params):
                    continue
                rank = _rank(match)
                order = (not route.created, route.created, route.namespace, route.name, rule_index, match_index)
                if best is None or rank > best[0] or (rank == best[0] and order < best[1]):
                    best = (rank, order, Match(route, rule, rule_index, match))
    return NoRoute() if best is None else best[2]


def matches(match: RouteMatch, method: str, path: str, headers: Headers, params: dict[str, str]) -> bool:
    """Whether every part of `match` fits the request (`params`: each query parameter's first value)."""
    if match.method is not None and match.method != method:
        return False
    if not path_matches(match.path, path):
        return False
    for header in _first_by_name(match.headers, fold_case=True):
        value = header_value(headers, header.name)
        if value is None or not _value_matches(header.type, header.value, value):
            return False
    for param in _first_by_name(match.query_params, fold_case=False):
        found = params.get(param.name)
        if found is None or not _value_matches(param.type, param.value, found):
            return False
    return True


def path_matches(match: PathMatch, path: str) -> bool:
    """PathPrefix matches whole path elements, ignoring a trailing `/` of the prefix: `/abc` matches `/abc`,
    `/abc/` and `/abc/def`, never `/abcd`."""
    if match.type == "Exact":
        return path == match.value
    if match.type == "RegularExpression":
        return compile_re2(match.value).fullmatch(path) is not None
    prefix = match.value.rstrip("/")
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def header_value(headers: Headers, name: str) -> str | None:
    """All values of header `name` (any case) joined by "," as HTTP allows combining them, or None."""
    wanted = name.lower().encode("latin-1")
    values = [v.decode("latin-1") for n, v in headers if n.lower() == wanted]
    return ",".join(values) if values else None


def pick_backend(rule: RouteRule, rng: random.Random) -> BackendRef | BackendError:
    """A backend at random in proportion to the weights; none, or all weights 0, is an error (500 by the spec)."""
    total = sum(b.weight for b in rule.backends)
    if total == 0:
        reason = "the rule has no backendRefs" if not rule.backends else "every backendRef has weight 0"
        return BackendError(INVALID_BACKEND, reason)
    point = rng.randrange(total)
    for backend in rule.backends:
        if point < backend.weight:
            return backend
        point -= backend.weight
    raise AssertionError("unreachable: point < total")


def invalid_backend(route: HTTPRoute, backend: BackendRef, ports: Sequence[int] | None) -> str | None:
    """Why `backend` cannot take requests (the 500 case), or None; `ports` are its Service's (None: no such Service,
    as `MeshIndex.services.get(backend.service)` finds it)."""
    if backend.namespace != route.namespace:
        return f"backend {backend.service} is in another namespace (not permitted without a ReferenceGrant)"
    if ports is None:
        return f"Service {backend.service} not found"
    if backend.port not in ports:
        return f"Service {backend.service} has no port {backend.port}"
    return None


def modify_headers(headers: Headers, modifier: HeaderModifier) -> Headers:
    """A new header list with `set` (replacing every value), then `add` (appending), then `remove` applied."""
    out = list(headers)
    for name, value in modifier.set:
        key = name.lower().encode("latin-1")
        out = [(n, v) for n, v in out if n.lower() != key]
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    out.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in modifier.add)
    removed = {name.lower().encode("latin-1") for name in modifier.remove}
    return [(n, v) for n, v in out if n.lower() not in removed]


def rewrite_path(path: str, matched: PathMatch, modifier: PathModifier) -> str:
    """The path after a ReplaceFullPath or ReplacePrefixMatch modifier (the query is not part of `path`).

    ReplacePrefixMatch replaces the matched PathPrefix element-wise, trailing slashes of prefix and replacement
    ignored: prefix `/foo` replaced by `/xyz` turns `/foo/bar` into `/xyz/bar` and `/foo/` into `/xyz/`; replaced
    by "" or `/` it turns `/foo/bar` into `/bar` and `/foo` into `/`."""
    if modifier.type == "ReplaceFullPath":
        return modifier.value or "/"
    if matched.type != "PathPrefix":
        return path  # control rejects this combination; a proxy keeps the path rather than guess
    rest = path[len(matched.value.rstrip("/")) :]
    return (modifier.value.rstrip("/") + rest) or "/"


def rewrite_request(target: str, headers: Headers, matched: RouteMatch, rewrite: URLRewrite) -> tuple[str, Headers]:
    """The request target and headers after a URLRewrite: the path per `rewrite_path`, Host replaced."""
    path, query = split_target(target)
    if rewrite.path is not None:
        path = rewrite_path(path, matched.path, rewrite.path)
    if rewrite.hostname is not None:
        headers = [(n, v) for n, v in headers if n.lower() != b"host"] + [(b"host", rewrite.hostname.encode())]
    return (f"{path}?{query}" if query else path), headers


def redirect_location(
    redirect: RequestRedirect, matched: RouteMatch, scheme: str, host: str, port: int, target: str
) -> str:
    """The Location of a RequestRedirect answer to a request for `scheme://host` (its Host header) on `port` (the
    Service port: a mesh's listener). Unset parts keep the request's; with a scheme but no port the port is the
    scheme's well-known one, and a well-known port (80 for http, 443 for https) is left out, as the spec says."""
    new_scheme = redirect.scheme or scheme
    hostname = redirect.hostname or _strip_port(host)
    if redirect.port is not None:
        new_port = redirect.port
    elif redirect.scheme is not None:
        new_port = _WELL_KNOWN_PORTS.get(redirect.scheme, port)
    else:
        new_port = port
    path, query = split_target(target)
    if redirect.path is not None:
        path = rewrite_path(path, matched.path, redirect.path)
    authority = hostname if _WELL_KNOWN_PORTS.get(new_scheme) == new_port else f"{hostname}:{new_port}"
    return f"{new_scheme}://{authority}{path}" + (f"?{query}" if query else "")


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _rank(match: RouteMatch) -> tuple[int, int, int, int, int]:
    prefix_length = len(match.path.value.rstrip("/")) if match.path.type == "PathPrefix" else 0
    return (
        _PATH_RANK[match.path.type],
        prefix_length,
        match.method is not None,
        len(match.headers),
        len(match.query_params),
    )


def _first_by_name(entries: Sequence[ValueMatch], fold_case: bool) -> list[ValueMatch]:
    """The first entry of each name: the spec says later entries with an equivalent name are ignored."""
    seen: set[str] = set()
    out = []
    for entry in entries:
        key = entry.name.lower() if fold_case else entry.name
        if key not in seen:
            seen.add(key)
            out.append(entry)
    return out


def _first_params(query: str) -> dict[str, str]:
    # A repeated parameter is left undefined by the spec; the first value is the common choice (Envoy's too).
    out: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        out.setdefault(name, value)
    return out


def _value_matches(kind: str, expected: str, actual: str) -> bool:
    if kind == "Exact":
        return actual == expected
    return compile_re2(expected).fullmatch(actual) is not None
