"""Control's warnings: Istio's root namespace and labels with compatibility off, policies that select nothing."""

from __future__ import annotations

from typing import Any

import yaml

from control.model.advice import mesh_warnings
from control.model.kube import Namespace, Pod
from control.model.mesh import MeshSettings, enrolled
from control.model.security import AuthorizationPolicy, PeerAuthentication

OFF, ON = MeshSettings(), MeshSettings(istio_compat=True)


def namespace(name: str, **labels: str) -> Namespace:
    return Namespace.from_k8s({"kind": "Namespace", "metadata": {"name": name, "labels": labels}})


def pod(name: str, ns: str, **labels: str) -> Pod:
    return Pod.from_k8s({
        "kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels},
        "spec": {"nodeName": "n1"}, "status": {"phase": "Running", "podIP": "10.0.0.9"},
    })  # fmt: skip


def policy(kind: str, doc: str) -> Any:
    obj = yaml.safe_load(doc)
    return (AuthorizationPolicy if kind == "authz" else PeerAuthentication).from_k8s(obj)


# Istio's documented mesh-wide STRICT mTLS, as a user copies it.
ISTIO_STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""
DENY_DB = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-db, namespace: shop}
spec: {action: DENY, selector: {matchLabels: {app: db}}, rules: [{}]}
"""
EMPTY_NS = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: staging}
spec: {}
"""

SHOP = [namespace("shop", **{"meshlet.io/dataplane-mode": "ambient"}), pod("web", "shop", app="web")]


def codes(objects: list[Any], settings: MeshSettings = OFF, known: bool = True) -> dict[str, str]:
    return {w.object: w.code for w in mesh_warnings(objects, settings, known)}


def test_istio_mesh_wide_policy_warns_with_compat_off_and_not_with_it_on() -> None:
    objects = [*SHOP, policy("peer", ISTIO_STRICT)]
    [warning] = mesh_warnings(objects, OFF)
    assert warning.object == "PeerAuthentication istio-system/default"
    assert "Istio's root namespace" in warning.message and "--istio-compat" in warning.message
    assert "move it to meshlet-system" in warning.message
    assert mesh_warnings(objects, ON) == []
    # Offline (validate, no pods): still said, as what it is without knowing the workloads.
    [offline] = mesh_warnings([policy("peer", ISTIO_STRICT)], OFF, workloads_known=False)
    assert "workloads of istio-system only" in offline.message


def test_istio_label_warns_with_compat_off_and_enrolls_with_it_on() -> None:
    istio_ns = namespace("legacy", **{"istio.io/dataplane-mode": "ambient"})
    opted_out = pod("batch", "shop", **{"istio.io/dataplane-mode": "none"})
    objects = [*SHOP, istio_ns, pod("api", "legacy"), opted_out]
    assert codes(objects) == {"Namespace legacy": "istio-label-ignored", "Pod shop/batch": "istio-label-ignored"}
    assert "label it meshlet.io/dataplane-mode=ambient" in str(mesh_warnings(objects, OFF)[0])
    assert codes(objects, ON) == {}
    assert not enrolled(pod("api", "legacy"), istio_ns, OFF)
    assert enrolled(pod("api", "legacy"), istio_ns, ON)
    assert enrolled(opted_out, SHOP[0], OFF) and not enrolled(opted_out, SHOP[0], ON)


def test_policies_that_select_nothing_are_named() -> None:
    objects = [*SHOP, namespace("staging"), policy("authz", DENY_DB), policy("authz", EMPTY_NS)]
    assert codes(objects) == {
        "AuthorizationPolicy shop/deny-db": "selector-matches-nothing",
        "AuthorizationPolicy staging/allow-nothing": "policy-in-empty-namespace",
    }
    assert codes([*objects, pod("db", "shop", app="db")]) == {
        "AuthorizationPolicy staging/allow-nothing": "policy-in-empty-namespace"
    }
    # Without the cluster's pods nothing can be said about what a selector matches.
    assert codes(objects, known=False) == {}


def test_a_root_policy_selecting_a_label_no_enrolled_pod_has() -> None:
    root = policy("authz", DENY_DB.replace("namespace: shop", "namespace: meshlet-system"))
    assert codes([*SHOP, root]) == {"AuthorizationPolicy meshlet-system/deny-db": "selector-matches-nothing"}
    assert codes([*SHOP, root, pod("db", "shop", app="db")]) == {}


def test_a_second_root_mesh_wide_mode_is_shadowed() -> None:
    ours = policy("peer", ISTIO_STRICT.replace("istio-system", "meshlet-system").replace("STRICT", "PERMISSIVE"))
    [warning] = mesh_warnings([*SHOP, ours, policy("peer", ISTIO_STRICT)], ON)
    assert warning.code == "mesh-wide-mode-shadowed" and warning.object == "PeerAuthentication istio-system/default"
    assert "PeerAuthentication meshlet-system/default sets the mesh-wide mTLS mode (PERMISSIVE)" in warning.message


def test_a_root_peer_authentication_with_a_selector_applies_in_the_root_only() -> None:
    scoped = policy("peer", ISTIO_STRICT.replace("spec: {", "spec: {selector: {matchLabels: {app: web}}, "))
    [warning] = mesh_warnings([*SHOP, scoped], ON)  # web is enrolled, but in shop, not in istio-system
    assert warning.code == "policy-in-empty-namespace"
    assert "applies in its own namespace only" in warning.message


def test_an_unset_first_root_shadows_nothing() -> None:
    unset = policy("peer", ISTIO_STRICT.replace("istio-system", "meshlet-system").replace("STRICT", "UNSET"))
    assert mesh_warnings([*SHOP, unset, policy("peer", ISTIO_STRICT)], ON) == []
