"""The config stream between control and the node proxies: its envelope, collections and keys.

Control encodes with it and ztunnel decodes with it; both test against it. It re-exports the strict
SPIFFE parser of `meshlet_contracts.identity`: control and ztunnel parse identities with that one parser,
and a malformed identity raises `IdentityError` (a ValueError), not `WireError`.

Config stream (a WebSocket at `/v1/config`, JSON text messages):
- control -> proxy `snapshot`: {"type", "epoch", "version", "resources": {collection: [item, ...]}}
- control -> proxy `delta`: {"type", "epoch", "version", "base", "upsert": {collection: [item]},
  "remove": {collection: [key]}}; `base` is the version the delta applies to.
- proxy -> control `ack`: {"type": "ack", "version"} or `nack`: {"type": "nack", "version", "error"}.
Snapshots and deltas also carry `mesh`: {"rootNamespaces": [...]} (`meshlet_contracts.mesh_config`;
optional: controls before 2026-11-29 sent none). `epoch` changes when control restarts; versions count up
within an epoch. Collections and their keys: workloads by `uid`, services by `namespace/name`, authorization
policies and peer authentications by `namespace/name`, HTTPRoutes (`http_routes`) and TrafficPolicies
(`traffic_policies`) by `namespace/name`; each item's shape is defined once in `meshlet_contracts.config_items`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from meshlet_contracts.identity import (
    IdentityError,
    SpiffeId,
    WorkloadIdentity,
    node_spiffe_id,
    parse_spiffe_id,
    spiffe_id,
)
from meshlet_contracts.json_steps import loads_in_steps

__all__ = [
    "CERTIFICATES_PATH",
    "COLLECTIONS",
    "CONFIG_PATH",
    "IdentityError",
    "SpiffeId",
    "WireError",
    "WorkloadIdentity",
    "decode",
    "encode",
    "item_key",
    "node_spiffe_id",
    "parse_spiffe_id",
    "spiffe_id",
]

COLLECTIONS = (
    "workloads",
    "services",
    "authorization_policies",
    "peer_authentications",
    "http_routes",
    "traffic_policies",
)
CONFIG_PATH = "/v1/config"
CERTIFICATES_PATH = "/v1/certificates"


class WireError(ValueError):
    """A message does not follow the schema."""


def item_key(collection: str, item: Mapping[str, Any]) -> str:
    """The key of an item within its collection (the shapes are in `meshlet_contracts.config_items`)."""
    if collection == "workloads":
        return str(item["uid"])
    return f"{item['namespace']}/{item['name']}"


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), sort_keys=True)


def decode(text: str | bytes, in_steps: bool = False) -> dict[str, Any]:
    """Parse one message and check its envelope; the payload is checked by whoever applies it. `in_steps`: parse a
    big message element by element (`json_steps`), for a worker thread that must not hold the GIL for all of it."""
    try:
        message = loads_in_steps(text) if in_steps and isinstance(text, str) else json.loads(text)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from exc
    except RecursionError:  # nested past the parser's recursion limit: this message's fault, not a crash
        raise WireError("not JSON: nested too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("a message is a JSON object with a string 'type'")
    kind = message["type"]
    required: dict[str, tuple[str, ...]] = {
        "snapshot": ("epoch", "version", "resources"),
        "delta": ("epoch", "version", "base", "upsert", "remove"),
        "ack": ("version",),
        "nack": ("version", "error"),
    }
    if kind not in required:
        raise WireError(f"unknown message type {kind!r}")
    missing = [f for f in required[kind] if f not in message]
    if missing:
        raise WireError(f"{kind} message lacks {', '.join(missing)}")
    if not isinstance(message["version"], int):
        raise WireError(f"{kind}.version must be an integer")
    return message
