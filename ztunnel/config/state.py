"""The config a node proxy holds: an immutable snapshot, replaced whole by each accepted message.

`apply` is sans-IO: it takes the held state and a decoded message and returns the new state, or raises
`ConfigRejected` with the reason (which the client sends back as a nack). The data path reads
`ConfigState` objects and never sees one half-applied.

Besides the collections, a state holds the root namespaces control named in the message's `mesh` object
(`meshlet_contracts.mesh_config`): a snapshot without one (a control before it) leaves them unset, so the
ztunnel's own flag governs; a delta without one keeps what the held state had.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from meshlet_contracts.mesh_config import MESH_KEY, MeshConfigError, parse_mesh
from meshlet_contracts.wire import COLLECTIONS, item_key

Items = Mapping[str, Mapping[str, Any]]


class ConfigRejected(ValueError):
    """A message cannot be applied; the held state stays as it was."""


@dataclass(frozen=True, slots=True)
class ConfigState:
    """One version of the mesh config: collection -> key -> wire item (read-only)."""

    epoch: str = ""
    version: int = 0
    resources: Mapping[str, Items] = field(
        default_factory=lambda: MappingProxyType({c: MappingProxyType({}) for c in COLLECTIONS})
    )

    root_namespaces: tuple[str, ...] | None = None
    """What control named in the `mesh` object (None: it named none; the ztunnel's `--root-namespace` holds)."""

    def items(self, collection: str) -> Items:
        return self.resources.get(collection, MappingProxyType({}))


Validator = Callable[[ConfigState], None]
"""Checks a candidate state before it is accepted (raises ConfigRejected); ztunnel's domain conversion."""


def _check_items(collection: str, items: object) -> dict[str, Any]:
    if collection not in COLLECTIONS:
        raise ConfigRejected(f"unknown collection {collection!r}")
    if not isinstance(items, list):
        raise ConfigRejected(f"{collection}: expected a list")
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        try:
            out[item_key(collection, item)] = item
        except (KeyError, TypeError):
            raise ConfigRejected(f"{collection}[{i}]: item without its key fields") from None
    return out


def apply(held: ConfigState, message: Mapping[str, Any], validate: Validator | None = None) -> ConfigState:
    """The state after `message` (a decoded snapshot or delta)."""
    roots = _roots(message, None if message["type"] == "snapshot" else held.root_namespaces)
    if message["type"] == "snapshot":
        resources = message["resources"]
        if not isinstance(resources, Mapping):
            raise ConfigRejected("snapshot.resources: expected a mapping")
        new = {c: _check_items(c, resources.get(c, [])) for c in COLLECTIONS}
        for c in resources:
            if c not in COLLECTIONS:
                raise ConfigRejected(f"unknown collection {c!r}")
    elif message["type"] == "delta":
        if message["epoch"] != held.epoch or message["base"] != held.version:
            raise ConfigRejected(
                f"delta from {message['epoch']}/{message['base']} does not apply to held {held.epoch}/{held.version}"
            )
        new = {c: dict(held.items(c)) for c in COLLECTIONS}
        for c, items in dict(message["upsert"]).items():
            new_items = _check_items(c, items)
            new[c].update(new_items)
        for c, keys in dict(message["remove"]).items():
            if c not in COLLECTIONS or not isinstance(keys, list):
                raise ConfigRejected(f"remove.{c}: expected a list of keys of a known collection")
            for k in keys:
                new[c].pop(k, None)
    else:
        raise ConfigRejected(f"{message['type']} is not a config message")
    state = ConfigState(
        epoch=str(message["epoch"]),
        version=int(message["version"]),
        resources=MappingProxyType({c: MappingProxyType(v) for c, v in new.items()}),
        root_namespaces=roots,
    )
    if validate is not None:
        validate(state)
    return state


def _roots(message: Mapping[str, Any], held: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if MESH_KEY not in message:
        return held
    try:
        return parse_mesh(message[MESH_KEY])
    except MeshConfigError as exc:
        raise ConfigRejected(str(exc)) from None
