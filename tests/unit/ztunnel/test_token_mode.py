"""ztunnel on Kubernetes: a ServiceAccount token file instead of a node credential, read afresh for every
request; the config cache keyed on a secret of the node's own; and a start that says which file is missing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.unit.ztunnel.test_config_cache import state
from ztunnel.config.cache import cache_key, decode, encode, local_secret
from ztunnel.config.client import NodeCredential
from ztunnel.main import main, node_credential, parser

DAY = 24 * 3600.0


def test_each_request_carries_the_token_as_it_is_on_disk_now(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    credential = NodeCredential.from_token(token, tmp_path / "root-cert.pem")
    assert credential.headers() == {"Authorization": "Bearer first"}
    token.write_text("rotated")  # the kubelet replaced it
    assert credential.headers() == {"Authorization": "Bearer rotated"}
    token.write_text("")
    with pytest.raises(OSError, match="is empty"):
        credential.headers()
    token.unlink()
    with pytest.raises(OSError):
        credential.headers()
    assert NodeCredential.in_dir(tmp_path).headers() == {}  # a client certificate needs no header


def test_the_cache_secret_is_made_once_private_and_keys_only_this_nodes_cache(tmp_path: Path) -> None:
    cache = tmp_path / "ztunnel" / "config.json"
    secret = local_secret(cache)
    assert secret.parent == cache.parent and stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert len(secret.read_bytes()) == 32
    first = secret.read_bytes()
    assert local_secret(cache) == secret and secret.read_bytes() == first  # a restart keeps it
    data = encode(state(), "node1", "cluster.local", cache_key(first))
    assert decode(data, "node1", "cluster.local", cache_key(first), DAY).state.version == state().version
    other = local_secret(tmp_path / "other-node" / "config.json").read_bytes()
    with pytest.raises(ValueError, match="MAC does not verify"):
        decode(data, "node1", "cluster.local", cache_key(other), DAY)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --credentials DIR (a provisioned node) or --token PATH with --root-cert PATH"),
        (["--token", "{tmp}/token"], "--root-cert PATH is missing"),
        (["--credentials", "{tmp}", "--token", "{tmp}/token"], "not both"),
        (["--token", "{tmp}/token", "--root-cert", "{tmp}/root-cert.pem"], "{tmp}/token is missing"),
        (["--credentials", "{tmp}"], "{tmp}/node-key.pem is missing (provision the node first)"),
    ],
)
def test_a_start_without_one_complete_way_to_prove_the_node_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "root-cert.pem").write_text("root")
    argv = ["--node", "n1", "--control", "https://127.0.0.1:1", *(a.format(tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_token_mode_parses_and_builds_a_token_credential(tmp_path: Path) -> None:
    args = parser().parse_args(
        ["--node", "n1", "--control", "https://c:15012", "--token", "/t", "--root-cert", "/r.pem"]
    )
    assert (args.token, args.root_cert, args.credentials) == (Path("/t"), Path("/r.pem"), None)
    assert node_credential(args) == NodeCredential(None, None, Path("/r.pem"), Path("/t"))


def test_a_token_mode_ztunnel_keys_its_config_cache_on_the_local_secret(tmp_path: Path) -> None:
    from ztunnel.main import Ztunnel

    cache = tmp_path / "cache" / "config.json"
    argv = ["--node", "n1", "--control", "https://c:15012", "--token", str(tmp_path / "token")]
    args = parser().parse_args([*argv, "--root-cert", str(tmp_path / "root.pem"), "--config-cache", str(cache)])
    proxy = Ztunnel(args)
    assert proxy.cache is not None
    # what this node wrote under its secret (here: written by hand with it) is what a restart serves from
    cache.write_bytes(encode(state(), "n1", "cluster.local", cache_key(local_secret(cache).read_bytes())))
    cached = proxy.cache.load()
    assert cached is not None and cached.state.version == state().version
    cache.write_bytes(encode(state(), "n1", "cluster.local", cache_key(b"not this node's secret")))
    assert proxy.cache.load() is None
