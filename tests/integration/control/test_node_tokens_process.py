"""`python -m control serve --source kubernetes`: a ztunnel pod's token gets its node's certificates, the root
is published as a ConfigMap, and the serving certificate names the in-cluster Service."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cryptography import x509

from tests.conftest import until, wait_for
from tests.integration.control.conftest import TD, ControlProcess
from tests.kubeapi import KubeApiServer
from ztunnel.config.client import ConfigClient, NodeCredential
from ztunnel.identity.manager import IdentityError, IdentityManager, new_csr

NS, SA = "meshlet-system", "meshlet-node"


def _create(api: KubeApiServer, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = api.store.create(api.store.types[("", "v1", plural)], namespace, body, True)
    return created


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        v1 = server.core_v1()
        v1.create_namespace({"metadata": {"name": NS}})
        v1.create_namespace({"metadata": {"name": "mesh", "labels": {"meshlet.io/dataplane-mode": "ambient"}}})
        v1.create_namespaced_service_account(NS, {"metadata": {"name": SA}})
        for i, sa in enumerate(("web", "api")):
            v1.create_namespaced_service_account("mesh", {"metadata": {"name": sa}})
            _create(server, "pods", "mesh", {
                "metadata": {"name": f"{sa}-1", "namespace": "mesh", "labels": {"app": sa}},
                "spec": {"nodeName": "node-x", "serviceAccountName": sa, "containers": [{"name": "app"}]},
                "status": {"phase": "Running", "podIP": f"10.1.0.{i + 2}",
                           "conditions": [{"type": "Ready", "status": "True"}]},
            })  # fmt: skip
        yield server


@pytest.fixture
def control(tmp_path: Path, api: KubeApiServer) -> Iterator[ControlProcess]:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    c = ControlProcess(tmp_path, extra_args=("--source", "kubernetes", "--kubeconfig", str(kubeconfig)))
    c.store.mkdir()
    c.start()
    try:
        yield c
    finally:
        if c.proc is not None:
            c.kill(signal.SIGTERM)


def _ztunnel_token(api: KubeApiServer, node: str, audience: str = "meshlet") -> str:
    zt = _create(api, "pods", NS, {
        "metadata": {"generateName": "meshlet-node-", "namespace": NS},
        "spec": {"nodeName": node, "serviceAccountName": SA, "containers": [{"name": "ztunnel"}]},
        "status": {"phase": "Running"},
    })  # fmt: skip
    ref = kubernetes.client.V1BoundObjectReference(
        api_version="v1", kind="Pod", name=zt["metadata"]["name"], uid=zt["metadata"]["uid"]
    )
    spec = kubernetes.client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600, bound_object_ref=ref)
    answer: Any = api.core_v1().create_namespaced_service_account_token(
        SA, NS, kubernetes.client.AuthenticationV1TokenRequest(spec=spec)
    )
    return str(answer.status.token)


def _csr(control: ControlProcess, root: Path, token: str, spiffe: str, tmp: Path) -> tuple[int, dict[str, Any]]:
    _, csr = new_csr(spiffe)
    body = tmp / "req.json"
    body.write_text(json.dumps({"csr": csr.decode()}))
    proc = subprocess.run(
        ["curl", "-sS", "-m", "10", "--cacert", str(root), "-H", f"Authorization: Bearer {token}",
         "-H", "Content-Type: application/json", "--data-binary", f"@{body}", "-w", "\n%{http_code}",
         f"{control.url}/v1/certificates"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text, _, code = proc.stdout.rpartition("\n")
    return int(code), json.loads(text)


def test_a_ztunnel_token_gets_its_nodes_certificate_and_a_wrong_audience_gets_401(
    control: ControlProcess, api: KubeApiServer, tmp_path: Path
) -> None:
    # what the DaemonSet mounts as --root-cert: the ConfigMap control publishes
    cm = wait_for(lambda: api.core_v1().read_namespaced_config_map("meshlet-root-cert", NS), 10, "the root ConfigMap")
    root = tmp_path / "root-cert.pem"
    root.write_text(cm.data["root-cert.pem"])
    spiffe = f"spiffe://{TD}/ns/mesh/sa/web"
    wait_for(lambda: control.status()["objects"] >= 4, 10, "control listed the cluster")
    code, body = _csr(control, root, _ztunnel_token(api, "node-x"), spiffe, tmp_path)
    assert code == 200, body
    leaf = x509.load_pem_x509_certificate(body["certificateChain"][0].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
    code, body = _csr(control, root, _ztunnel_token(api, "node-x", audience="vault"), spiffe, tmp_path)
    assert (code, body["reason"]) == (401, "token_invalid")
    assert "audiences" in body["error"]
    assert control.metric("meshlet_control_node_auth_refused_total", 'reason="token_invalid"') == 1
    code, body = _csr(control, root, _ztunnel_token(api, "node-y"), spiffe, tmp_path)
    assert (code, body["reason"]) == (403, "no_pod_on_node")


def test_the_serving_certificate_names_the_control_service(control: ControlProcess, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{control.port}", "-showcerts"],
        input="", capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    pem = proc.stdout[proc.stdout.index("-----BEGIN CERTIFICATE-----") :]
    pem = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    san = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    names = san.value.get_values_for_type(x509.DNSName)
    assert {"meshlet-control.meshlet-system.svc", "meshlet-control.meshlet-system.svc.cluster.local"} <= set(names)


@pytest.mark.asyncio
async def test_ztunnel_in_token_mode_streams_config_and_gets_certificates_with_the_token_on_disk_now(
    control: ControlProcess, api: KubeApiServer, tmp_path: Path
) -> None:
    cm = wait_for(lambda: api.core_v1().read_namespaced_config_map("meshlet-root-cert", NS), 10, "the root ConfigMap")
    root, token = tmp_path / "root-cert.pem", tmp_path / "token"
    root.write_text(cm.data["root-cert.pem"])
    token.write_text(_ztunnel_token(api, "node-x"))
    credential = NodeCredential.from_token(token, root)
    config = ConfigClient(control.url, credential, backoff_max=0.5)
    task = asyncio.create_task(config.run())
    try:
        await until(lambda: config.state.version >= 1, "a config snapshot over the token-authenticated stream", 10)
        assert [p["node"] for p in control.status()["proxies"]] == ["node-x"]
        identities = IdentityManager(control.url, credential, retry_max=1.0)
        assert (await identities.certificate(f"spiffe://{TD}/ns/mesh/sa/web")).spiffe_id.endswith("/sa/web")
        # the kubelet rewrote the file (here with a token control refuses): the next request carries it
        token.write_text(_ztunnel_token(api, "node-x", audience="vault"))
        with pytest.raises(IdentityError, match="401"):
            await identities.certificate(f"spiffe://{TD}/ns/mesh/sa/api")
        token.write_text(_ztunnel_token(api, "node-x"))
        assert (await identities.certificate(f"spiffe://{TD}/ns/mesh/sa/api")).spiffe_id.endswith("/sa/api")
    finally:
        await config.stop()
        await asyncio.wait_for(task, 5)
