"""`meshlet install` against the test API server creates every rendered object (server-side apply, field manager
meshlet), a second run changes nothing, and `meshlet uninstall` leaves no meshlet object of any kind the install
used, keeping the CRDs unless `--crds`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from daemonset import Values, render
from tests.integration.cli.conftest import meshlet, seed
from tests.kubeapi import KubeApiServer


def rendered() -> list[dict[str, Any]]:
    return render(Values())


def kinds() -> set[tuple[str, str]]:
    return {(o["apiVersion"], o["kind"]) for o in rendered()}


def stored(api: KubeApiServer, api_version: str, kind: str) -> list[dict[str, Any]]:
    """Every object of a kind, in every namespace."""
    group, _, version = api_version.rpartition("/")
    (rt,) = [t for t in api.store.types.values() if (t.group, t.version, t.kind) == (group, version, kind)]
    items, _ = api.store.snapshot(rt, None)
    return list(items.values())


def meshlet_objects(api: KubeApiServer) -> dict[tuple[str, str], set[str]]:
    """What of each kind the install used carries meshlet's label or a rendered name, by kind."""
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered()}
    found: dict[tuple[str, str], set[str]] = {}
    for api_version, kind in kinds():
        for obj in stored(api, api_version, kind):
            meta = obj["metadata"]
            ours = (meta.get("labels") or {}).get("app.kubernetes.io/part-of") == "meshlet"
            if ours or (kind, meta["name"]) in names or meta.get("namespace") == "meshlet-system":
                found.setdefault((api_version, kind), set()).add(meta["name"])
    return found


def test_install_creates_every_rendered_object_with_server_side_apply(api: KubeApiServer, kubeconfig: Path) -> None:
    result = meshlet("install", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 0, result.output
    for obj in rendered():
        (got,) = [
            o for o in stored(api, obj["apiVersion"], obj["kind"]) if o["metadata"]["name"] == obj["metadata"]["name"]
        ]
        assert got["metadata"].get("namespace", "") == obj["metadata"].get("namespace", "")
        assert [m["manager"] for m in got["metadata"]["managedFields"]] == ["meshlet"]
        assert f"{obj['kind'].lower()}/{obj['metadata']['name']}" in result.output
        if "spec" in obj:
            assert got["spec"] == obj["spec"]
    assert result.output.count(" created\n") == len(rendered())
    # CRDs go first, then the namespace, then what lives in it.
    patches = [path.partition("?")[0] for method, path in api.requests if method == "PATCH"]
    assert len(patches) == len(rendered())
    crds = [i for i, p in enumerate(patches) if "/customresourcedefinitions/" in p]
    namespace = patches.index("/api/v1/namespaces/meshlet-system")
    inside = [i for i, p in enumerate(patches) if "/namespaces/meshlet-system/" in p]
    assert max(crds) < namespace < min(inside)
    assert "warning: the Gateway API CRD httproutes.gateway.networking.k8s.io is not installed" in result.output


def test_a_second_install_changes_nothing(api: KubeApiServer, kubeconfig: Path) -> None:
    assert meshlet("install", "--kubeconfig", str(kubeconfig)).exit_code == 0
    before = api.store.resource_version
    again = meshlet("install", "--kubeconfig", str(kubeconfig))
    assert again.exit_code == 0, again.output
    assert again.output.count(" unchanged\n") == len(rendered())
    assert api.store.resource_version == before  # not one write


def test_a_changed_value_is_configured_in_place(api: KubeApiServer, kubeconfig: Path) -> None:
    assert meshlet("install", "--kubeconfig", str(kubeconfig)).exit_code == 0
    result = meshlet("install", "--kubeconfig", str(kubeconfig), "--set", "control.replicas=2")
    assert result.exit_code == 0, result.output
    assert "deployment/meshlet-control (meshlet-system) configured" in result.output
    (deployment,) = stored(api, "apps/v1", "Deployment")
    assert deployment["spec"]["replicas"] == 2 and deployment["metadata"]["generation"] == 2


def test_uninstall_leaves_nothing_behind_but_the_crds_and_crds_removes_them(
    api: KubeApiServer, kubeconfig: Path
) -> None:
    assert meshlet("install", "--kubeconfig", str(kubeconfig)).exit_code == 0
    # What control adds at run time lives in the namespace and goes with it.
    seed(api, "", "v1", "configmaps", "meshlet-system", {"metadata": {"name": "meshlet-root-cert"}, "data": {}})
    result = meshlet("uninstall", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 0, result.output
    left = meshlet_objects(api)
    crds = {o["metadata"]["name"] for o in rendered() if o["kind"] == "CustomResourceDefinition"}
    assert left == {("apiextensions.k8s.io/v1", "CustomResourceDefinition"): crds}
    assert stored(api, "v1", "ConfigMap") == []
    again = meshlet("uninstall", "--kubeconfig", str(kubeconfig), "--crds")
    assert again.exit_code == 0, again.output
    assert meshlet_objects(api) == {}
    assert "namespace/meshlet-system absent" in again.output  # already gone: not an error
    assert meshlet("uninstall", "--kubeconfig", str(kubeconfig), "--crds").exit_code == 0


def test_require_gateway_api_refuses_before_applying_anything(api: KubeApiServer, kubeconfig: Path) -> None:
    result = meshlet("install", "--kubeconfig", str(kubeconfig), "--require-gateway-api")
    assert result.exit_code == 1
    assert "httproutes.gateway.networking.k8s.io is not installed" in result.output
    assert meshlet_objects(api) == {}


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    with KubeApiServer() as gone:
        kubeconfig = gone.write_kubeconfig(tmp_path / "kc")
    result = meshlet("install", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 1
    assert "the API server:" in result.output and "Traceback" not in result.output


def test_the_installed_command_installs_and_uninstalls_as_a_process(api: KubeApiServer, kubeconfig: Path) -> None:
    """The `meshlet` entry point a user runs, as a process: the same objects, then nothing left."""
    command = Path(sys.executable).parent / "meshlet"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        return subprocess.run(
            [str(command), *args, "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, env=env, timeout=60
        )

    done = run("install")
    assert done.returncode == 0, done.stderr
    n = len(rendered())
    assert f"meshlet installed: {n} objects, {n} created or configured" in done.stdout
    assert set(meshlet_objects(api)) == kinds()
    gone = run("uninstall", "--crds")
    assert gone.returncode == 0, gone.stderr
    assert meshlet_objects(api) == {}
