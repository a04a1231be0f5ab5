"""Control's root CA on Kubernetes lives in the Secret `meshlet-ca`: a control that restarts with an empty state
directory (its emptyDir is gone with the old pod) signs with the same root, and nodes never see the root change."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from control.ca import CertificateAuthority
from control.ca_secret import adopt, ca_files
from control.sources.kube_api import NAMESPACES
from tests.conftest import wait_for
from tests.integration.control.conftest import free_port
from tests.integration.control.kube_helpers import control_process, create, kube, namespace
from tests.kubeapi import KubeApiServer

__all__ = ["kube"]
TD = "td.test"


def _secret(kube: KubeApiServer) -> dict[str, str]:
    data: dict[str, str] = kube.core_v1().read_namespaced_secret("meshlet-ca", "meshlet-system").data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_the_first_control_stores_its_root_and_later_ones_adopt_it(kube: KubeApiServer, tmp_path: Path) -> None:
    create(kube, NAMESPACES, namespace("meshlet-system"))
    first = CertificateAuthority.load_or_create(tmp_path / "a", TD)
    assert adopt(kube.api_client(), "meshlet-system", tmp_path / "a") == "created"
    assert _secret(kube)["root-cert.pem"] == first.root_pem
    # A new pod: an empty state directory makes a root of its own first, then takes the Secret's.
    second = CertificateAuthority.load_or_create(tmp_path / "b", TD)
    assert second.root_pem != first.root_pem
    assert adopt(kube.api_client(), "meshlet-system", tmp_path / "b") == "adopted"
    assert CertificateAuthority.load_or_create(tmp_path / "b", TD).root_pem == first.root_pem
    key, _ = ca_files(tmp_path / "b")
    assert key.stat().st_mode & 0o777 == 0o600
    assert adopt(kube.api_client(), "meshlet-system", tmp_path / "b") == "unchanged"


def test_a_secret_without_the_root_is_an_error_naming_it(kube: KubeApiServer, tmp_path: Path) -> None:
    create(kube, NAMESPACES, namespace("meshlet-system"))
    kube.core_v1().create_namespaced_secret("meshlet-system", {"metadata": {"name": "meshlet-ca"}, "data": {}})
    CertificateAuthority.load_or_create(tmp_path, TD)
    with pytest.raises(ValueError, match="meshlet-system/meshlet-ca lacks root-key.pem"):
        adopt(kube.api_client(), "meshlet-system", tmp_path)


def _root_configmap(kube: KubeApiServer) -> str | None:
    try:
        data: dict[str, str] = kube.core_v1().read_namespaced_config_map("meshlet-root-cert", "meshlet-system").data
    except Exception:  # not published yet (404)
        return None
    return data.get("root-cert.pem")


def _run_control(kube: KubeApiServer, tmp_path: Path, state: Path) -> str:
    """Start control with `state`, wait for the root it publishes, stop it; returns that root."""
    with control_process(kube, tmp_path, state, free_port()):
        own = ca_files(state)[1]
        return wait_for(  # type: ignore[no-any-return]
            lambda: own.is_file() and _root_configmap(kube) == own.read_text() and own.read_text(),
            20,
            "control publishing the root it signs with",
        )


def test_a_control_restarted_with_an_empty_state_directory_keeps_the_root(kube: KubeApiServer, tmp_path: Path) -> None:
    create(kube, NAMESPACES, namespace("meshlet-system"))
    first = _run_control(kube, tmp_path, tmp_path / "pod-1")
    second = _run_control(kube, tmp_path, tmp_path / "pod-2")
    assert first.startswith("-----BEGIN CERTIFICATE-----") and second == first
