"""Istio users: with `--istio-compat` Istio's mesh-wide policy and enrolling label work as they do in Istio;
without it, both are accepted but ignored, and control says so (status, /debug/status, the CLI)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tests.e2e.conftest import Lab, lab_of, meshlet
from tests.e2e.mesh_helpers import config_dump, reaches, refused, url

POLICY_TIMEOUT = 10

# Istio's documented mesh-wide STRICT mTLS, as a user brings it from Istio (its own apiVersion, its root).
ISTIO_STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
"""
ISTIO_NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
"""
ISTIO_LABEL = "istio.io/dataplane-mode=ambient"


def cli_json(lab: Lab, *args: str) -> Any:
    proc = meshlet(*args, "--lab", lab.id, "-o", "json", check=False)
    assert proc.returncode == 0, f"meshlet {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return json.loads(proc.stdout)


def control_status(lab: Lab) -> dict[str, Any]:
    with urllib.request.urlopen(f"{lab.status['control']['metrics']}/debug/status", timeout=5) as resp:
        status: dict[str, Any] = json.loads(resp.read())
    return status


def held_peer_auths(lab: Lab, node: str) -> list[str]:
    return [f"{p['namespace']}/{p['name']}" for p in config_dump(lab, node)["policies"]["peerAuthentication"]]


def captured(lab: Lab, node: str) -> int:
    count: int = cli_json(lab, "status", "--node", node)["pods"]["captured"]
    return count


def test_with_compat_istios_mesh_wide_strict_refuses_plaintext_and_istios_label_enrolls(tmp_path: Path) -> None:
    manifest = tmp_path / "strict.yaml"
    manifest.write_text(ISTIO_STRICT)
    with lab_of("--istio-compat") as lab:
        assert lab.status["istioCompat"] is True
        target = url(lab, "web-2a")
        assert reaches(lab, "web-1b", target)  # PERMISSIVE until a policy says otherwise
        meshlet("apply", "-f", str(manifest), "--lab", lab.id)
        wait_for(lambda: refused(lab, "web-1b", target), POLICY_TIMEOUT, "istio-system's STRICT to refuse plaintext")
        assert reaches(lab, "web-1a", target)  # mTLS from an enrolled pod still gets in
        dump = config_dump(lab, "node2")
        assert dump["rootNamespaces"] == ["meshlet-system", "istio-system"]
        assert dump["rootNamespacesFrom"] == "control"
        policies = cli_json(lab, "policies", "--node", "node2")
        [row] = [p for p in policies if p["namespace"] == "istio-system"]
        assert row["scope"] == "the whole mesh"
        # Istio's label enrolls the plain namespace: its pods are captured and reach the STRICT pod over mTLS.
        meshlet("label", "namespace", "plain", ISTIO_LABEL, "--lab", lab.id)
        wait_for(lambda: captured(lab, "node1") == 2, POLICY_TIMEOUT, "web-1b captured by Istio's label")
        wait_for(lambda: reaches(lab, "web-1b", target), POLICY_TIMEOUT, "web-1b let in over mTLS")
        status = control_status(lab)
        assert (status["istioCompat"], status["rootNamespaces"], status["warnings"]) == (
            True, ["meshlet-system", "istio-system"], []
        )  # fmt: skip
        assert cli_json(lab, "status")["warnings"] == []
        # Istio's opt-out label on one pod releases it: plaintext again, refused by the mesh-wide STRICT.
        meshlet("label", "pod", "web-1b", "-n", "plain", "istio.io/dataplane-mode=none", "--lab", lab.id)
        wait_for(lambda: captured(lab, "node1") == 1, POLICY_TIMEOUT, "web-1b released by Istio's opt-out label")
        wait_for(lambda: refused(lab, "web-1b", target), POLICY_TIMEOUT, "web-1b's plaintext refused again")


def test_without_compat_istios_policy_and_label_are_ignored_and_warned_about(shared_lab: Lab, tmp_path: Path) -> None:
    lab = shared_lab
    manifest = tmp_path / "strict.yaml"
    manifest.write_text(ISTIO_NAMESPACE + "---\n" + ISTIO_STRICT)  # left from an Istio install, say
    target = url(lab, "web-2a")
    meshlet("apply", "-f", str(manifest), "--lab", lab.id)
    try:
        meshlet("label", "namespace", "plain", ISTIO_LABEL, "--lab", lab.id)
        # Taken by every ztunnel, and ignored: istio-system is no root here, and plaintext still gets in.
        wait_for(lambda: held_peer_auths(lab, "node2"), POLICY_TIMEOUT, "node2's ztunnel to hold the istio policy")
        assert config_dump(lab, "node2")["rootNamespaces"] == ["meshlet-system"]
        assert reaches(lab, "web-1b", target)
        assert captured(lab, "node1") == 1  # Istio's label enrolls nothing
        expected = {
            "PeerAuthentication istio-system/default": "policy-in-empty-namespace",
            "Namespace plain": "istio-label-ignored",
        }
        warnings = {w["object"]: w for w in control_status(lab)["warnings"]}
        assert {k: w["code"] for k, w in warnings.items()} == expected
        assert "--istio-compat" in warnings["Namespace plain"]["message"]
        # `meshlet status`: the warnings, once for the lab, and the mesh still healthy (exit 0).
        report = cli_json(lab, "status")
        assert report["healthy"] and len(report["warnings"]) == 2
        assert any(w.startswith("Namespace plain: label istio.io/dataplane-mode=ambient") for w in report["warnings"])
        table = " ".join(meshlet("status", "--lab", lab.id).stdout.split())  # rich wraps at 80 columns
        assert "warning: PeerAuthentication istio-system/default: istio-system is Istio's root namespace" in table
        # `meshlet validate` over the store says the same offline, and takes every object (exit 0).
        checked = meshlet("validate", "-f", lab.status["store"], "-o", "json")
        offline = {w["object"]: w["code"] for w in json.loads(checked.stdout)["warnings"]}
        assert offline == expected
        shown = " ".join(meshlet("validate", "-f", lab.status["store"]).stdout.split())
        assert "no problems" in shown and "2 warnings" in shown and "istio-system/default" in shown
        quiet = meshlet("validate", "-f", lab.status["store"], "--istio-compat", "-o", "json")
        assert json.loads(quiet.stdout)["warnings"] == []
    finally:
        meshlet("label", "namespace", "plain", "istio.io/dataplane-mode-", "--lab", lab.id, check=False)
        meshlet("delete", "-f", str(manifest), "--lab", lab.id, check=False)
        wait_for(lambda: not control_status(lab)["warnings"], POLICY_TIMEOUT, "the warnings to clear")
        for node in ("node1", "node2"):
            wait_for(lambda n=node: not held_peer_auths(lab, n), POLICY_TIMEOUT, f"{node}'s ztunnel to drop the policy")
