"""HTTPRoute (Gateway API `gateway.networking.k8s.io/v1`, GAMMA mesh profile): raw objects checked and converted
into the shared proxy-ready types of `meshlet_contracts.routes`, and their status per parent Service.

A mesh route attaches to a Service (`parentRefs: [{group: "", kind: Service, name, port?}]`) and changes how
requests to that Service are routed. Validation is strict, as for policies: an unknown field is an error naming its
full path (`spec.rules[0].matches[1].path.type: unknown path type 'Prefix'; expected one of ...`), and so are the
rules Gateway API's CRD enforces (a port on every Service backend, ReplacePrefixMatch only with one PathPrefix
match, ...). What depends on other objects is not an error but the route's status, as in Gateway API: `Accepted`
says whether its parent Service exists, `ResolvedRefs` whether every backend resolves (`route_status`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from control.model.fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ObjectKey,
    fail,
    opt_map,
    opt_str,
    port_number,
    typed_key,
)
from control.model.kube import Service
from control.model.nested import check_fields, each, mapping, within
from meshlet_contracts import routes
from meshlet_contracts.regex import RegexError, compile_re2
from meshlet_contracts.routes import (
    PATH_TYPES,
    VALUE_TYPES,
    BackendRef,
    Condition,
    HeaderModifier,
    ParentRef,
    ParentStatus,
    PathMatch,
    PathModifier,
    RequestRedirect,
    Retry,
    RouteFilter,
    RouteMatch,
    RouteRule,
    URLRewrite,
    ValueMatch,
)

API_VERSIONS = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
# Gateway API's duration format (GEP-2257): up to four number+unit parts, as in 1h30m or 500ms.
_DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
}
MAX_RETRY_ATTEMPTS = 10
_UNSUPPORTED_FILTERS = ("ExtensionRef", "CORS", "ExternalAuth")


@dataclass(frozen=True, slots=True)
class HTTPRoute(routes.HTTPRoute):
    """The shared HTTPRoute as the store holds it (status not yet computed): `from_k8s` validates."""

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> HTTPRoute:
        key = typed_key(obj, "HTTPRoute", API_VERSIONS)
        created = _timestamp(opt_str(obj, "metadata.creationTimestamp"))
        spec = opt_map(obj, "spec")
        with within("spec"):
            check_fields(spec, ("parentRefs", "hostnames", "rules"))
            # Hostnames do not select mesh traffic: GAMMA routes by the Service the client connects to.
            parents = each(spec, "parentRefs", lambda raw: _parent(raw, key.namespace))
            for i, parent in enumerate(parents):
                if parent in parents[:i]:
                    fail(f"parentRefs[{i}]", f"Service {parent.service} port {parent.port or 'all'} is listed twice")
            if not parents:
                fail(
                    "parentRefs", "required: name the Service this route applies to ({group: '', kind: Service, name})"
                )
            rules = each(spec, "rules", lambda raw: _rule(raw, key.namespace)) or (RouteRule(),)
        return cls(key.name, key.namespace, parents, rules, created)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("HTTPRoute", self.namespace, self.name)


def route_status(route: routes.HTTPRoute, services: Mapping[str, Service]) -> tuple[ParentStatus, ...]:
    """The Gateway API conditions of `route` for each parent, given the Services by `namespace/name`.

    ResolvedRefs is the same for every parent: a backend in another namespace is `RefNotPermitted` (meshlet has no
    ReferenceGrant yet, so it never permits one), one whose Service or port does not exist `BackendNotFound`."""
    resolved = Condition("ResolvedRefs", "True", "ResolvedRefs", "every backendRef resolves")
    for backend in _backends(route):
        service = services.get(backend.service)
        if backend.namespace != route.namespace:
            message = f"backend {backend.service} is in another namespace (no ReferenceGrant support)"
            resolved = Condition("ResolvedRefs", "False", "RefNotPermitted", message)
            break
        if service is None or backend.port not in {p.port for p in service.ports}:
            what = f"Service {backend.service}" + ("" if service is None else f" port {backend.port}")
            resolved = Condition("ResolvedRefs", "False", "BackendNotFound", f"{what} not found")
    out = []
    for parent in route.parents:
        service = services.get(parent.service)
        if parent.namespace != route.namespace:
            # A consumer route (GAMMA): it would change only its own namespace's view of the Service; not yet.
            accepted = Condition("Accepted", "False", "UnsupportedValue", "parent Service in another namespace")
        elif service is None:
            accepted = Condition("Accepted", "False", "NoMatchingParent", f"Service {parent.service} not found")
        elif parent.port is not None and parent.port not in {p.port for p in service.ports}:
            message = f"Service {parent.service} has no port {parent.port}"
            accepted = Condition("Accepted", "False", "NoMatchingParent", message)
        else:
            accepted = Condition("Accepted", "True", "Accepted", "")
        out.append(ParentStatus(parent, (accepted, resolved)))
    return tuple(out)


def with_status(route: routes.HTTPRoute, services: Mapping[str, Service]) -> routes.HTTPRoute:
    return replace(route, status=route_status(route, services))


def _backends(route: routes.HTTPRoute) -> list[BackendRef]:
    found: list[BackendRef] = []
    for rule in route.rules:
        found.extend(rule.backends)
        found.extend(f.settings for f in rule.filters if isinstance(f.settings, BackendRef))
    return found


def _timestamp(text: str) -> str:
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail("metadata.creationTimestamp", f"{text!r} is not an RFC 3339 time such as 2026-11-28T10:00:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _service_ref(raw: Mapping[str, Any], namespace: str, what: str, known: tuple[str, ...]) -> tuple[str, str]:
    """(name, namespace) of a reference that must be a core Service, checked with its group and kind."""
    check_fields(raw, known)
    group, kind = raw.get("group", ""), raw.get("kind", "Service")
    if what == "parent":  # Gateway API's defaults for a parentRef name a Gateway
        group, kind = raw.get("group", "gateway.networking.k8s.io"), raw.get("kind", "Gateway")
    if group != "" or kind != "Service":
        field = "group" if group != "" else "kind"
        fail(field, f"meshlet routes mesh traffic only: a {what} is a Service (group: \"\", kind: Service), "
                    f"got group {group!r} kind {kind!r}")  # fmt: skip
    name = opt_str(raw, "name")
    if not name or not DNS_LABEL.fullmatch(name):
        fail("name", "required: a Service name" if not name else f"{name!r} is not a valid Service name")
    ns = opt_str(raw, "namespace") or namespace
    if not DNS_LABEL.fullmatch(ns):
        fail("namespace", f"{ns!r} is not a valid namespace name")
    return name, ns


def _parent(raw: Mapping[str, Any], namespace: str) -> ParentRef:
    if raw.get("sectionName") is not None:
        fail("sectionName", "not supported for Service parents; use port")
    name, ns = _service_ref(raw, namespace, "parent", ("group", "kind", "name", "namespace", "port", "sectionName"))
    return ParentRef(name, ns, None if raw.get("port") is None else port_number(raw["port"], "port"))


def _backend(raw: Mapping[str, Any], namespace: str) -> BackendRef:
    if raw.get("filters"):
        fail("filters", "per-backend filters are not supported; put them on the rule")
    name, ns = _service_ref(
        raw, namespace, "backend", ("group", "kind", "name", "namespace", "port", "weight", "filters")
    )
    if raw.get("port") is None:
        fail("port", "required for a Service backend")
    weight = raw.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 1_000_000:
        fail("weight", f"expected an integer in 0..1000000, got {weight!r}")
    return BackendRef(name, ns, port_number(raw["port"], "port"), weight)


def _rule(raw: Mapping[str, Any], namespace: str) -> RouteRule:
    check_fields(raw, ("name", "matches", "filters", "backendRefs", "timeouts", "retry"))
    name = opt_str(raw, "name")
    if name and not DNS_SUBDOMAIN.fullmatch(name):
        fail("name", f"{name!r} is not a valid section name")
    matches = each(raw, "matches", _match) or (RouteMatch(),)
    filters = each(raw, "filters", lambda f: _filter(f, namespace))
    kinds = [f.type for f in filters]
    for kind in set(kinds) - {"RequestMirror"}:
        if kinds.count(kind) > 1:
            fail("filters", f"{kind} may appear only once per rule")
    if "RequestRedirect" in kinds and "URLRewrite" in kinds:
        fail("filters", "RequestRedirect and URLRewrite cannot be used together")
    for f in filters:
        path = getattr(f.settings, "path", None)
        if path is not None and path.type == "ReplacePrefixMatch":
            if len(matches) != 1 or matches[0].path.type != "PathPrefix":
                fail("filters", "ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix")
    backends = each(raw, "backendRefs", lambda b: _backend(b, namespace))
    with within("timeouts"):
        timeouts = opt_map(raw, "timeouts")
        check_fields(timeouts, ("request", "backendRequest"))
        request, backend = _duration(timeouts, "request"), _duration(timeouts, "backendRequest")
    if request is not None and backend is not None and backend > request:
        fail("timeouts.backendRequest", "must not be longer than timeouts.request")
    with within("retry"):
        retry = _retry(opt_map(raw, "retry")) if raw.get("retry") is not None else None
    return RouteRule(matches, filters, backends, request, backend, retry, name)


def _match(raw: Mapping[str, Any]) -> RouteMatch:
    check_fields(raw, ("path", "headers", "queryParams", "method"))
    with within("path"):
        path_raw = mapping(raw.get("path", {}), "")
        check_fields(path_raw, ("type", "value"))
        kind = opt_str(path_raw, "type", "PathPrefix")
        if kind not in PATH_TYPES:
            fail("type", f"unknown path type {kind!r}; expected one of {', '.join(PATH_TYPES)}")
        value = opt_str(path_raw, "value", "/")
        if kind == "RegularExpression":
            _regex(value, "value")
        elif not value.startswith("/") or "//" in value or "/./" in value or "/../" in value or "#" in value:
            fail("value", f"{value!r}: an {kind} path starts with '/' and has no '//', '/./', '/../' or '#'")
    method = raw.get("method")
    if method is not None and method not in METHODS:
        fail("method", f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    headers = each(raw, "headers", lambda h: _value_match(h, header=True))
    queries = each(raw, "queryParams", lambda q: _value_match(q, header=False))
    return RouteMatch(PathMatch(kind, value), headers, queries, method)


def _value_match(raw: Mapping[str, Any], header: bool) -> ValueMatch:
    check_fields(raw, ("type", "name", "value"))
    kind = opt_str(raw, "type", "Exact")
    if kind not in VALUE_TYPES:
        fail("type", f"unknown match type {kind!r}; expected one of {', '.join(VALUE_TYPES)}")
    name = opt_str(raw, "name")
    if not name or (header and not _HEADER_NAME.fullmatch(name)):
        fail("name", "required" if not name else f"{name!r} is not a valid header name")
    value = opt_str(raw, "value")
    if kind == "RegularExpression":
        _regex(value, "value")
    return ValueMatch(name, value, kind)


def _filter(raw: Mapping[str, Any], namespace: str) -> RouteFilter:
    kind = opt_str(raw, "type")
    if kind in _UNSUPPORTED_FILTERS:
        fail("type", f"filter {kind} is not supported")
    if kind not in _FILTER_FIELDS:
        fail("type", f"unknown filter type {kind!r}; expected one of {', '.join(_FILTER_FIELDS)}")
    key = _FILTER_FIELDS[kind]
    check_fields(raw, ("type", key))
    if raw.get(key) is None:
        fail(key, f"required for a {kind} filter")
    body = mapping(raw[key], key)
    settings: routes.Filter
    with within(key):
        if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            settings = _header_modifier(body)
        elif kind == "RequestRedirect":
            settings = _redirect(body)
        elif kind == "URLRewrite":
            check_fields(body, ("hostname", "path"))
            settings = URLRewrite(_hostname(body), _path_modifier(body))
        else:
            check_fields(body, ("backendRef",))
            with within("backendRef"):
                settings = _backend(mapping(body.get("backendRef"), ""), namespace)
    return RouteFilter(kind, settings)  # type: ignore[arg-type]


def _header_modifier(raw: Mapping[str, Any]) -> HeaderModifier:
    check_fields(raw, ("set", "add", "remove"))
    lists: dict[str, list[tuple[str, str]]] = {}
    for op in ("set", "add"):
        seen: set[str] = set()
        lists[op] = []
        for i, entry in enumerate(each(raw, op, lambda e: e)):
            with within(f"{op}[{i}]"):
                check_fields(entry, ("name", "value"))
                name, value = opt_str(entry, "name"), opt_str(entry, "value")
                if not _HEADER_NAME.fullmatch(name):
                    fail("name", "required" if not name else f"{name!r} is not a valid header name")
                if "\r" in value or "\n" in value:
                    fail("value", "a header value cannot hold a line break")
            if name.lower() in seen:
                fail(f"{op}[{i}].name", f"header {name!r} is listed twice")
            seen.add(name.lower())
            lists[op].append((name, value))
    removed = []
    for i, name in enumerate(raw.get("remove") or []):
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            fail(f"remove[{i}]", f"{name!r} is not a valid header name")
        removed.append(name)
    return HeaderModifier(tuple(lists["set"]), tuple(lists["add"]), tuple(removed))


def _redirect(raw: Mapping[str, Any]) -> RequestRedirect:
    check_fields(raw, ("scheme", "hostname", "path", "port", "statusCode"))
    scheme = raw.get("scheme")
    if scheme not in (None, "http", "https"):
        fail("scheme", f"expected http or https, got {scheme!r}")
    code = raw.get("statusCode", 302)
    if code not in routes.REDIRECT_CODES or isinstance(code, bool):
        fail("statusCode", f"expected one of {', '.join(map(str, routes.REDIRECT_CODES))}, got {code!r}")
    port = None if raw.get("port") is None else port_number(raw["port"], "port")
    return RequestRedirect(scheme, _hostname(raw), _path_modifier(raw), port, code)


def _path_modifier(raw: Mapping[str, Any]) -> PathModifier | None:
    if raw.get("path") is None:
        return None
    with within("path"):
        body = mapping(raw["path"], "")
        kind = opt_str(body, "type")
        if kind not in routes.PATH_MODIFIER_TYPES:
            fail("type", f"expected one of {', '.join(routes.PATH_MODIFIER_TYPES)}, got {kind!r}")
        value_key = "replaceFullPath" if kind == "ReplaceFullPath" else "replacePrefixMatch"
        check_fields(body, ("type", value_key))
        value = opt_str(body, value_key, "/")
        if value and not value.startswith("/"):
            fail(value_key, f"{value!r}: a path starts with '/'")
    return PathModifier(kind, value)


def _hostname(raw: Mapping[str, Any]) -> str | None:
    name = opt_str(raw, "hostname")
    if name and not DNS_SUBDOMAIN.fullmatch(name):
        fail("hostname", f"{name!r} is not a valid hostname")
    return name or None


def _retry(raw: Mapping[str, Any]) -> Retry:
    check_fields(raw, ("attempts", "codes", "backoff"))
    attempts = raw.get("attempts")
    if attempts is not None and (not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0):
        fail("attempts", f"expected a non-negative integer, got {attempts!r}")
    if attempts is not None and attempts > MAX_RETRY_ATTEMPTS:
        # Each retry holds the client, a connection slot and an endpoint: a route must not multiply load without end.
        fail("attempts", f"at most {MAX_RETRY_ATTEMPTS} retries, got {attempts}")
    codes = []
    for i, code in enumerate(raw.get("codes") or []):
        if not isinstance(code, int) or isinstance(code, bool) or not 400 <= code <= 599:
            fail(f"codes[{i}]", f"expected an HTTP status code in 400..599, got {code!r}")
        codes.append(code)
    return Retry(attempts, tuple(codes), _duration(raw, "backoff"))


def _duration(raw: Mapping[str, Any], key: str) -> float | None:
    """A Gateway API duration in seconds; "0s" disables a timeout, as the spec says, and reads as None."""
    text = raw.get(key)
    if text is None:
        return None
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        fail(key, f"{text!r} is not a duration such as 10s, 500ms or 1h30m")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    return seconds or None


def _regex(value: str, field: str) -> None:
    try:
        compile_re2(value)
    except RegexError as exc:
        fail(field, f"{value!r} is not a regular expression RE2 takes (as Envoy matches them): {exc}")
