"""The root namespaces reach ztunnel on the config stream: held across deltas, cached, and obeyed by decisions."""

from __future__ import annotations

from typing import Any

import pytest

from meshlet_contracts.mesh_config import MeshConfigError, dataplane_labels, parse_mesh, root_namespaces
from meshlet_contracts.policy import AuthorizationPolicy, PeerAuthentication, Rule
from ztunnel.config.cache import cache_key, decode, encode
from ztunnel.config.state import ConfigRejected, ConfigState, apply
from ztunnel.rbac import Connection, authorize, mtls_mode
from ztunnel.state.mesh import MeshIndex
from ztunnel.state.policy import PeerAuthentications

BOTH = {"rootNamespaces": ["meshlet-system", "istio-system"]}


def snapshot(mesh: object = None, version: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "snapshot", "epoch": "e", "version": version, "resources": {}}
    if mesh is not None:
        message["mesh"] = mesh
    return message


def delta(base: int, mesh: object = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "delta", "epoch": "e", "version": base + 1, "base": base, "upsert": {},
                               "remove": {}}  # fmt: skip
    if mesh is not None:
        message["mesh"] = mesh
    return message


def test_a_snapshot_names_the_roots_and_a_delta_without_mesh_keeps_them() -> None:
    s1 = apply(ConfigState(), snapshot(BOTH))
    assert s1.root_namespaces == ("meshlet-system", "istio-system")
    s2 = apply(s1, delta(1))
    assert s2.root_namespaces == ("meshlet-system", "istio-system")
    s3 = apply(s2, delta(2, {"rootNamespaces": ["platform"]}))
    assert s3.root_namespaces == ("platform",)


def test_a_control_that_names_no_roots_leaves_the_ztunnel_flag_in_force() -> None:
    state = apply(ConfigState(), snapshot())
    assert state.root_namespaces is None
    assert MeshIndex.from_config(state, None, ("from-flag",)).root_namespaces == ("from-flag",)
    named = apply(ConfigState(), snapshot(BOTH))
    assert MeshIndex.from_config(named, None, ("from-flag",)).root_namespaces == ("meshlet-system", "istio-system")


@pytest.mark.parametrize(
    ("mesh", "reason"),
    [
        ([], "mesh: expected an object"),
        ({}, "mesh.rootNamespaces: expected a non-empty list"),
        ({"rootNamespaces": []}, "non-empty list"),
        ({"rootNamespaces": "istio-system"}, "non-empty list"),
        ({"rootNamespaces": ["ok", "Not_A_Namespace"]}, r"mesh.rootNamespaces\[1\]: 'Not_A_Namespace' is not"),
        ({"rootNamespaces": [7]}, r"mesh.rootNamespaces\[0\]: 7 is not"),
    ],
)
def test_a_bad_mesh_object_is_rejected_naming_the_field(mesh: object, reason: str) -> None:
    held = apply(ConfigState(), snapshot(BOTH))
    with pytest.raises(ConfigRejected, match=reason):
        apply(ConfigState(), snapshot(mesh))
    with pytest.raises(ConfigRejected, match=reason):
        apply(held, delta(1, mesh))


def test_duplicates_collapse_and_order_is_kept() -> None:
    assert parse_mesh({"rootNamespaces": ["b", "a", "b"]}) == ("b", "a")
    with pytest.raises(MeshConfigError):
        parse_mesh(None)


def test_the_cache_keeps_the_roots_and_reads_files_without_them() -> None:
    key = cache_key(b"k")
    named = apply(ConfigState(), snapshot(BOTH, version=3))
    back = decode(encode(named, "n", "td", key), "n", "td", key, 60)
    assert back.state.root_namespaces == ("meshlet-system", "istio-system")
    unnamed = apply(ConfigState(), snapshot(version=3))
    assert decode(encode(unnamed, "n", "td", key), "n", "td", key, 60).state.root_namespaces is None


def test_compat_adds_istio_names_once() -> None:
    assert root_namespaces("meshlet-system", False) == ("meshlet-system",)
    assert root_namespaces("meshlet-system", True) == ("meshlet-system", "istio-system")
    assert root_namespaces("istio-system", True) == ("istio-system",)
    assert dataplane_labels("meshlet.io/dataplane-mode", True) == (
        "meshlet.io/dataplane-mode",
        "istio.io/dataplane-mode",
    )


def deny_all(namespace: str) -> AuthorizationPolicy:
    return AuthorizationPolicy("deny", namespace, None, "DENY", (Rule(),))


CONN = Connection("10.0.0.1", "spiffe://cluster.local/ns/a/sa/x", "10.0.0.2", 80)


def test_a_policy_of_every_root_governs_every_workload_and_no_other_namespace_does() -> None:
    roots = ("meshlet-system", "istio-system")
    assert not authorize([deny_all("istio-system")], "shop", {}, CONN, roots).allowed
    assert not authorize([deny_all("meshlet-system")], "shop", {}, CONN, roots).allowed
    assert authorize([deny_all("istio-system")], "shop", {}, CONN, ("meshlet-system",)).allowed
    assert authorize([deny_all("other")], "shop", {}, CONN, roots).allowed


def test_the_first_root_with_a_mesh_wide_peer_authentication_sets_the_mesh_mode() -> None:
    auths = PeerAuthentications(
        (PeerAuthentication("default", "istio-system", None, "STRICT"),
         PeerAuthentication("default", "meshlet-system", None, "PERMISSIVE"))
    )  # fmt: skip
    assert mtls_mode(auths, "shop", {}, 80, ("meshlet-system", "istio-system")) == "PERMISSIVE"
    assert mtls_mode(auths, "shop", {}, 80, ("istio-system", "meshlet-system")) == "STRICT"
    only_istio = PeerAuthentications((PeerAuthentication("default", "istio-system", None, "STRICT"),))
    assert mtls_mode(only_istio, "shop", {}, 80, ("meshlet-system", "istio-system")) == "STRICT"
    assert mtls_mode(only_istio, "shop", {}, 80, ("meshlet-system",)) == "PERMISSIVE"


def test_an_unset_mesh_wide_mode_in_the_first_root_defers_to_the_next_root() -> None:
    auths = PeerAuthentications(
        (PeerAuthentication("default", "meshlet-system", None, "UNSET"),
         PeerAuthentication("default", "istio-system", None, "STRICT"))
    )  # fmt: skip
    assert mtls_mode(auths, "shop", {}, 80, ("meshlet-system", "istio-system")) == "STRICT"


def test_an_index_refuses_a_string_for_its_roots() -> None:
    with pytest.raises(TypeError, match="not a string"):
        MeshIndex(root_namespaces="istio-system")  # type: ignore[arg-type]
