"""The last good config, kept on the node's disk so a restarted ztunnel can serve before control answers.

Without it, a ztunnel started while control is away would hold no config at all, and a proxy without
config cannot tell an enrolled destination from one outside the mesh: it must either pass everything
through in plaintext (the leak this file exists to prevent) or refuse everything. With it, the restarted
proxy serves with what it last accepted until control sends a fresh snapshot.

What is on disk is only trusted when it verifies: the file carries an HMAC-SHA256 over its body under a
key derived from the node's private key (the one secret the node already holds and nobody else should),
so a truncated, corrupted or hand-edited file, or one copied from another node, is refused with a reason
and the proxy waits for control instead. On Kubernetes the node holds no private key, only a ServiceAccount
token, which the kubelet rotates (an HMAC keyed on it would not verify an hour later) and which is no secret
of this node's alone (the API server and anyone allowed to mint tokens for the ServiceAccount can get one):
there the key comes from a random secret created once next to the cache file, mode 0600 (`local_secret`),
which a file from another node, or an edit by someone who cannot read the secret, does not verify with.
It also names the node and the trust domain it was written for, and files older than `max_age` are not used:
a config that old no longer describes the cluster.

Writes are atomic (temporary file + rename, mode 0600) and done in a worker thread; bursts of versions
coalesce into one write of the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from meshlet_contracts.mesh_config import MESH_KEY, mesh_item
from meshlet_contracts.wire import COLLECTIONS
from ztunnel.config.state import ConfigRejected, ConfigState, Validator, apply

log = logging.getLogger(__name__)
FORMAT = 1
_KEY_LABEL = b"meshlet ztunnel config cache v1\x00"


class CacheError(ValueError):
    """The cached config cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Cached:
    state: ConfigState
    saved_at: float
    """Wall-clock time the state was written."""


def cache_key(node_key_pem: bytes) -> bytes:
    """The MAC key: derived from the node's private key, so only this node's holder can write a valid file."""
    return hashlib.sha256(_KEY_LABEL + node_key_pem).digest()


def local_secret(cache_path: Path) -> Path:
    """The file holding this node's cache secret (32 random bytes, 0600, beside the cache), created on first use."""
    path = cache_path.with_name(f".{cache_path.name}.secret")
    if path.exists():
        return path  # made by an earlier start: the cache it keyed stays readable
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())
        # link, not rename: it never replaces a secret another ztunnel (a rolling update) made meanwhile,
        # and nobody ever reads a half-written one
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def encode(state: ConfigState, node: str, trust_domain: str, key: bytes, now: float | None = None) -> bytes:
    body = json.dumps(
        {
            "format": FORMAT,
            "node": node,
            "trustDomain": trust_domain,
            "savedAt": time.time() if now is None else now,
            "epoch": state.epoch,
            "version": state.version,
            "resources": {c: list(state.items(c).values()) for c in COLLECTIONS},
            **({} if state.root_namespaces is None else {MESH_KEY: mesh_item(state.root_namespaces)}),
        },
        separators=(",", ":"),
        sort_keys=True,
        default=_plain,
    ).encode()
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()
    return mac.encode() + b"\n" + body


def decode(
    data: bytes, node: str, trust_domain: str, key: bytes, max_age: float, validate: Validator | None = None
) -> Cached:
    """Verify and parse a cache file's bytes; raises CacheError naming what is wrong."""
    mac, sep, body = data.partition(b"\n")
    if not sep:
        raise CacheError("not a config cache (no MAC line)")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(mac, expected):
        raise CacheError("MAC does not verify (corrupted, edited, or written with another node's key)")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise CacheError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CacheError(f"format {doc.get('format') if isinstance(doc, dict) else None!r}, expected {FORMAT}")
    if doc.get("node") != node or doc.get("trustDomain") != trust_domain:
        raise CacheError(f"written for node {doc.get('node')!r} in {doc.get('trustDomain')!r}")
    saved_at = doc.get("savedAt")
    if not isinstance(saved_at, int | float):
        raise CacheError("savedAt: expected a number")
    age = time.time() - saved_at
    if age > max_age:
        raise CacheError(f"{age:.0f}s old, more than the {max_age:.0f}s a cached config may be")
    version, epoch = doc.get("version"), doc.get("epoch")
    if not isinstance(version, int) or version < 1 or not isinstance(epoch, str):
        raise CacheError("version and epoch: expected a positive integer and a string")
    message = {"type": "snapshot", "epoch": epoch, "version": version, "resources": doc.get("resources")}
    if MESH_KEY in doc:  # files written before control named its root namespaces have none
        message[MESH_KEY] = doc[MESH_KEY]
    try:
        state = apply(ConfigState(), message, validate)
    except (ConfigRejected, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CacheError(f"does not convert: {exc}") from None
    return Cached(state, float(saved_at))


class ConfigCache:
    """Reads the cache once at start; writes every accepted state (coalesced) while running."""

    def __init__(self, path: Path, node: str, trust_domain: str, node_key: Path, max_age: float) -> None:
        self.path = path
        self.node = node
        self.trust_domain = trust_domain
        self.max_age = max_age
        self._key = cache_key(node_key.read_bytes())
        self._latest: ConfigState | None = None
        self._wake = asyncio.Event()
        self.last_error: str | None = None
        """Why the cache was not used at start, or why the last write failed."""
        self.written: tuple[str, int] = ("", 0)
        """(epoch, version) of the state on disk: a state loaded from the cache is not written back, so
        its age keeps counting from when control sent it."""

    def load(self, validate: Validator | None = None) -> Cached | None:
        """The verified cached state, or None (no file, or it does not verify: the reason is logged)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.last_error = f"unreadable: {exc}"
            log.warning("config cache %s %s", self.path, self.last_error)
            return None
        try:
            cached = decode(data, self.node, self.trust_domain, self._key, self.max_age, validate)
        except CacheError as exc:
            self.last_error = str(exc)
            log.warning("config cache %s not used: %s", self.path, exc)
            return None
        self.written = (cached.state.epoch, cached.state.version)
        return cached

    def save(self, state: ConfigState) -> None:
        """Ask for `state` to be written (the writer task keeps only the latest)."""
        self._latest = state
        self._wake.set()

    async def run(self) -> None:
        """The writer: one write at a time, in a thread, always of the newest state asked for."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            state, self._latest = self._latest, None
            if state is None or (state.epoch, state.version) == self.written:
                continue
            data = await asyncio.to_thread(encode, state, self.node, self.trust_domain, self._key)
            try:
                await asyncio.to_thread(_write_atomic, self.path, data)
            except OSError as exc:
                self.last_error = f"write failed: {exc}"
                log.warning("config cache %s: %s", self.path, self.last_error)
                continue
            self.written = (state.epoch, state.version)
            self.last_error = None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _plain(obj: object) -> Any:
    # Items are read-only views of what the stream delivered: JSON needs plain mappings.
    if isinstance(obj, MappingProxyType):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON")
