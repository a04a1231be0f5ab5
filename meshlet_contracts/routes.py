"""HTTPRoute (Gateway API `gateway.networking.k8s.io/v1`, GAMMA mesh profile) in proxy-ready form, shared by control
and ztunnel.

Control validates the user's HTTPRoute (`control.model.routes`) into these types, adds the status it computed per
parent Service and sends them with `to_wire` in the `http_routes` collection (keyed by `namespace/name`); ztunnel
reads them back once with `from_wire` and routes with them (`ztunnel.l7.routing`). The wire form has camelCase keys,
every list present, durations as seconds (float) and the route's creation timestamp as RFC 3339 text in UTC
(`2026-11-28T10:00:00Z`, "" when unknown), which orders routes that tie on a match.

`from_wire` is strict, as for policies: an unknown field is an error rather than ignored, because a match or filter
this proxy does not know would otherwise be dropped and route requests somewhere the author did not mean.
Errors name the route and the field: `HTTPRoute shop/web: rules[0].matches[1].path.type: expected one of ...`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

from meshlet_contracts.config_items import HTTPRouteItem, ItemError, each, items, port, within
from meshlet_contracts.policy import PolicyError, identify_item, known_fields
from meshlet_contracts.route_parts import (
    FILTER_TYPES,
    PATH_MODIFIER_TYPES,
    PATH_TYPES,
    REDIRECT_CODES,
    VALUE_TYPES,
    BackendRef,
    Filter,
    FilterType,
    HeaderModifier,
    PathMatch,
    PathModifier,
    PathModifierType,
    PathType,
    RequestRedirect,
    RouteError,
    RouteFilter,
    RouteMatch,
    URLRewrite,
    ValueMatch,
    ValueType,
    _choice,
    _opt_text,
    _seconds,
    _text,
)

__all__ = [
    "FILTER_TYPES",
    "PATH_MODIFIER_TYPES",
    "PATH_TYPES",
    "REDIRECT_CODES",
    "VALUE_TYPES",
    "BackendRef",
    "Condition",
    "Filter",
    "FilterType",
    "HTTPRoute",
    "HeaderModifier",
    "ParentRef",
    "ParentStatus",
    "PathMatch",
    "PathModifier",
    "PathModifierType",
    "PathType",
    "RequestRedirect",
    "Retry",
    "RouteError",
    "RouteFilter",
    "RouteMatch",
    "RouteRule",
    "URLRewrite",
    "ValueMatch",
    "ValueType",
    "routes_from_wire",
]


@dataclass(frozen=True, slots=True)
class Retry:
    """Gateway API v1.2 `retry` (experimental): retry up to `attempts` times on these 5xx `codes` (and on
    connection errors), waiting `backoff` seconds (the implementation's default when None)."""

    attempts: int | None = None
    codes: tuple[int, ...] = ()
    backoff: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "codes": list(self.codes), "backoff": self.backoff}

    @classmethod
    def from_wire(cls, item: object) -> Retry:
        raw = known_fields(item, ("attempts", "codes", "backoff"))
        attempts = raw.get("attempts")
        if attempts is not None and (not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0):
            raise RouteError("attempts", f"expected a non-negative integer or null, got {attempts!r}")
        codes = []
        for i, code in enumerate(items(raw, "codes")):
            if not isinstance(code, int) or isinstance(code, bool) or not 400 <= code <= 599:
                raise RouteError(f"codes[{i}]", f"expected a status code in 400..599, got {code!r}")
            codes.append(code)
        return cls(attempts, tuple(codes), _seconds(raw, "backoff"))


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Requests any of `matches` selects go to one of `backends` (by weight) after `filters`; `timeout` bounds the
    whole request (retries included), `backend_timeout` each try, both in seconds (None: no limit)."""

    matches: tuple[RouteMatch, ...] = (RouteMatch(),)
    filters: tuple[RouteFilter, ...] = ()
    backends: tuple[BackendRef, ...] = ()
    timeout: float | None = None
    backend_timeout: float | None = None
    retry: Retry | None = None
    name: str = ""

    def filters_of(self, kind: FilterType) -> tuple[Filter, ...]:
        return tuple(f.settings for f in self.filters if f.type == kind)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "matches": [m.to_wire() for m in self.matches],
            "filters": [f.to_wire() for f in self.filters],
            "backendRefs": [b.to_wire() for b in self.backends],
            "timeouts": {"request": self.timeout, "backendRequest": self.backend_timeout},
            "retry": None if self.retry is None else self.retry.to_wire(),
        }

    @classmethod
    def from_wire(cls, item: object) -> RouteRule:
        raw = known_fields(item, ("name", "matches", "filters", "backendRefs", "timeouts", "retry"))
        with within("timeouts"):
            timeouts = known_fields(raw.get("timeouts") or {}, ("request", "backendRequest"))
            timeout, backend_timeout = _seconds(timeouts, "request"), _seconds(timeouts, "backendRequest")
        with within("retry"):
            retry = None if raw.get("retry") is None else Retry.from_wire(raw["retry"])
        matches = each(raw, "matches", RouteMatch.from_wire)
        return cls(
            matches or (RouteMatch(),),
            each(raw, "filters", RouteFilter.from_wire),
            each(raw, "backendRefs", BackendRef.from_wire),
            timeout,
            backend_timeout,
            retry,
            _opt_text(raw, "name") or "",
        )


@dataclass(frozen=True, slots=True)
class ParentRef:
    """The Service a route attaches to (GAMMA), all its ports or just `port`."""

    name: str
    namespace: str
    port: int | None = None

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "port": self.port}

    @classmethod
    def from_wire(cls, item: object) -> ParentRef:
        raw = known_fields(item, ("name", "namespace", "port"))
        number = None if raw.get("port") is None else port(raw["port"], "port")
        return cls(_text(raw, "name"), _text(raw, "namespace"), number)


@dataclass(frozen=True, slots=True)
class Condition:
    """A status condition as Gateway API writes them: `Accepted` or `ResolvedRefs`, "True"/"False", a reason."""

    type: str
    status: Literal["True", "False"]
    reason: str
    message: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message}

    @classmethod
    def from_wire(cls, item: object) -> Condition:
        raw = known_fields(item, ("type", "status", "reason", "message"))
        status = _choice(raw, "status", ("True", "False"))
        return cls(_text(raw, "type"), cast(Literal["True", "False"], status), _text(raw, "reason"),
                   _opt_text(raw, "message") or "")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ParentStatus:
    parent: ParentRef
    conditions: tuple[Condition, ...]

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def to_wire(self) -> dict[str, Any]:
        return {"parentRef": self.parent.to_wire(), "conditions": [c.to_wire() for c in self.conditions]}

    @classmethod
    def from_wire(cls, item: object) -> ParentStatus:
        raw = known_fields(item, ("parentRef", "conditions"))
        with within("parentRef"):
            parent = ParentRef.from_wire(raw.get("parentRef"))
        return cls(parent, each(raw, "conditions", Condition.from_wire))


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    """An HTTPRoute attached to Services. `status` is control's per parent; a proxy routes for the parents whose
    `Accepted` condition is True."""

    name: str
    namespace: str
    parents: tuple[ParentRef, ...]
    rules: tuple[RouteRule, ...]
    created: str = ""
    """Creation timestamp, RFC 3339 UTC (`2026-11-28T10:00:00Z`), "" when unknown: older routes win ties."""
    status: tuple[ParentStatus, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def accepted_parents(self) -> tuple[ParentRef, ...]:
        accepted = {s.parent for s in self.status if (c := s.condition("Accepted")) is not None and c.status == "True"}
        return tuple(p for p in self.parents if p in accepted)

    def to_wire(self) -> HTTPRouteItem:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "creationTimestamp": self.created,
            "parentRefs": [p.to_wire() for p in self.parents],
            "rules": [r.to_wire() for r in self.rules],
            "status": [s.to_wire() for s in self.status],
        }

    @classmethod
    def from_wire(cls, item: object) -> HTTPRoute:
        try:
            name, namespace, raw = identify_item(item, "HTTPRoute")
        except PolicyError as exc:
            raise RouteError(exc.field, exc.reason, exc.policy) from None
        try:
            known_fields(raw, ("name", "namespace", "creationTimestamp", "parentRefs", "rules", "status"))
            return cls(
                name,
                namespace,
                each(raw, "parentRefs", ParentRef.from_wire),
                each(raw, "rules", RouteRule.from_wire),
                _opt_text(raw, "creationTimestamp") or "",
                each(raw, "status", ParentStatus.from_wire),
            )
        except ItemError as exc:
            raise RouteError(exc.field, exc.reason, f"HTTPRoute {namespace}/{name}") from None


def routes_from_wire(raw_items: Iterable[object]) -> tuple[HTTPRoute, ...]:
    return tuple(HTTPRoute.from_wire(item) for item in raw_items)
