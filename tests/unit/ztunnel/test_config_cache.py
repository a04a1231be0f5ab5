"""ztunnel's cached config is used only when it verifies: this node's key, node, trust domain, age, content."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from ztunnel.config.cache import CacheError, ConfigCache, cache_key, decode, encode
from ztunnel.config.state import ConfigRejected, ConfigState, apply

W1 = {"uid": "u1", "name": "a", "namespace": "mesh"}
KEY = cache_key(b"-----BEGIN PRIVATE KEY-----\nnode1\n-----END PRIVATE KEY-----\n")
DAY = 86400.0


def state(version: int = 3) -> ConfigState:
    message = {"type": "snapshot", "epoch": "e1", "version": version, "resources": {"workloads": [W1]}}
    return apply(ConfigState(), message)


def test_a_cache_written_by_this_node_reads_back_as_the_same_state() -> None:
    cached = decode(encode(state(), "node1", "cluster.local", KEY), "node1", "cluster.local", KEY, DAY)
    assert cached.state.version == 3 and cached.state.epoch == "e1"
    assert dict(cached.state.items("workloads")) == {"u1": W1}
    assert abs(cached.saved_at - time.time()) < 60


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.replace(b'"name":"a"', b'"name":"b"'), "MAC does not verify"),  # edited
        (lambda b: b[: len(b) // 2], "MAC does not verify"),  # truncated
        (lambda b: b.replace(b"\n", b" ", 1), "no MAC line"),  # MAC line damaged
        (lambda b: b"0" * 64 + b"\n" + b.partition(b"\n")[2], "MAC does not verify"),  # MAC replaced
        (lambda b: b"", "no MAC line"),
        (lambda b: b"\x00" * 64, "no MAC line"),
    ],
)
def test_a_damaged_or_edited_cache_is_refused(change: object, reason: str) -> None:
    data = encode(state(), "node1", "cluster.local", KEY)
    with pytest.raises(CacheError, match=reason):
        decode(change(data), "node1", "cluster.local", KEY, DAY)  # type: ignore[operator]


def test_a_cache_of_another_node_key_node_or_trust_domain_is_refused() -> None:
    data = encode(state(), "node1", "cluster.local", KEY)
    with pytest.raises(CacheError, match="MAC does not verify"):
        decode(data, "node1", "cluster.local", cache_key(b"another node's key"), DAY)
    with pytest.raises(CacheError, match="written for node 'node1'"):
        decode(data, "node2", "cluster.local", KEY, DAY)
    with pytest.raises(CacheError, match="written for node"):
        decode(data, "node1", "other.domain", KEY, DAY)


def test_a_cache_older_than_the_limit_is_refused() -> None:
    data = encode(state(), "node1", "cluster.local", KEY, now=time.time() - 2 * DAY)
    with pytest.raises(CacheError, match="old, more than"):
        decode(data, "node1", "cluster.local", KEY, DAY)


def test_a_cache_the_proxy_cannot_convert_is_refused() -> None:
    def refuse(_: ConfigState) -> None:
        raise ConfigRejected("workload u1: no identity")

    data = encode(state(), "node1", "cluster.local", KEY)
    with pytest.raises(CacheError, match="does not convert: workload u1: no identity"):
        decode(data, "node1", "cluster.local", KEY, DAY, refuse)


def test_the_writer_keeps_the_latest_state_on_disk_and_a_loaded_one_is_not_rewritten(tmp_path: Path) -> None:
    node_key = tmp_path / "node-key.pem"
    node_key.write_bytes(b"key of node1")
    path = tmp_path / "state" / "config.json"

    async def scenario() -> None:
        cache = ConfigCache(path, "node1", "cluster.local", node_key, DAY)
        assert cache.load() is None  # no file yet: nothing to serve from
        writer = asyncio.create_task(cache.run())
        try:
            for version in (1, 2, 3):
                cache.save(state(version))
            async with asyncio.timeout(10):
                while cache.written != ("e1", 3):
                    await asyncio.sleep(0.01)
        finally:
            writer.cancel()
        assert os.stat(path).st_mode & 0o777 == 0o600
        again = ConfigCache(path, "node1", "cluster.local", node_key, DAY)
        loaded = again.load()
        assert loaded is not None and loaded.state.version == 3
        assert again.written == ("e1", 3)  # saving it again writes nothing: its age keeps counting
        path.write_bytes(path.read_bytes().replace(b'"name":"a"', b'"name":"z"'))
        assert ConfigCache(path, "node1", "cluster.local", node_key, DAY).load() is None

    asyncio.run(scenario())
