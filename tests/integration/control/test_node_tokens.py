"""Node identity on Kubernetes: control maps a ztunnel pod's ServiceAccount token to that pod's node.

Tokens are minted through the test API server's TokenRequest API, as the kubelet mints projected tokens,
and checked through its TokenReview API; each refusal names its reason and is counted by it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes
import pytest

from control.model.mesh import MeshSettings
from control.node_tokens import NodeTokenAuthenticator
from control.nodes import NodeAuthError
from control.server import Control
from control.settings import ControlSettings
from tests.conftest import until
from tests.integration.control.conftest import TD, free_port, namespace, pod
from tests.kubeapi import KubeApiServer
from ztunnel.identity.manager import new_csr

NS, SA = "meshlet-system", "meshlet-node"


class Cluster:
    """The test API server with the node DaemonSet's namespace, ServiceAccounts and ztunnel pods."""

    def __init__(self, api: KubeApiServer) -> None:
        self.api = api
        v1 = api.core_v1()
        v1.create_namespace({"metadata": {"name": NS}})
        for sa in (SA, "meshlet-control"):
            v1.create_namespaced_service_account(NS, {"metadata": {"name": sa}})

    def pod(self, name: str, node: str, sa: str = SA, phase: str = "Running") -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "ztunnel"}]},
            "status": {"phase": phase},
        }
        created: dict[str, Any] = self.api.store.create(self.api.store.types[("", "v1", "pods")], NS, body, True)
        return created

    def token(self, pod: dict[str, Any], audiences: tuple[str, ...] = ("meshlet",)) -> str:
        """A token bound to `pod`, minted as the kubelet mints it (TokenRequest, 10 minutes)."""
        meta = pod["metadata"]
        ref = kubernetes.client.V1BoundObjectReference(api_version="v1", kind="Pod", name=meta["name"], uid=meta["uid"])
        spec = kubernetes.client.V1TokenRequestSpec(
            audiences=list(audiences), expiration_seconds=600, bound_object_ref=ref
        )
        answer: Any = self.api.core_v1().create_namespaced_service_account_token(
            pod["spec"]["serviceAccountName"], NS, kubernetes.client.AuthenticationV1TokenRequest(spec=spec)
        )
        return str(answer.status.token)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with KubeApiServer() as api:
        yield Cluster(api)


async def _refused(auth: NodeTokenAuthenticator, token: str) -> NodeAuthError:
    with pytest.raises(NodeAuthError) as caught:
        await auth.authenticate(token)
    return caught.value


@pytest.mark.asyncio
async def test_a_ztunnel_pods_token_names_its_node_and_its_review_is_cached(cluster: Cluster) -> None:
    auth = NodeTokenAuthenticator(cluster.api.api_client())
    token = cluster.token(cluster.pod("ztunnel-a", "node-x"))
    assert await auth.authenticate(token) == "node-x"
    assert await auth.authenticate(token) == "node-x"
    assert auth.reviews == 1  # the second request was answered from the cache


@pytest.mark.asyncio
async def test_tokens_that_name_no_node_are_refused_each_with_its_reason(cluster: Cluster) -> None:
    auth = NodeTokenAuthenticator(cluster.api.api_client())
    zt = cluster.pod("ztunnel-a", "node-x")
    vault = await _refused(auth, cluster.token(zt, audiences=("vault",)))
    assert vault.reason == "token_invalid" and "audiences" in str(vault) and vault.status == 401
    expired = cluster.api.tokens.service_account(NS, SA, ["meshlet"], ttl=-1, pod=zt)
    assert (await _refused(auth, expired)).reason == "token_invalid"
    assert "expired" in str(await _refused(auth, expired))
    unknown = await _refused(auth, "not-a-token")
    assert unknown.reason == "token_invalid" and "token lookup failed" in str(unknown)
    other = await _refused(auth, cluster.token(cluster.pod("control-0", "node-x", sa="meshlet-control")))
    assert other.reason == "not_ztunnel" and "meshlet-system:meshlet-control" in str(other)
    unbound = cluster.api.tokens.service_account(NS, SA, ["meshlet"])
    assert (await _refused(auth, unbound)).reason == "token_not_bound"
    pending = await _refused(auth, cluster.token(cluster.pod("ztunnel-b", "node-y", phase="Pending")))
    assert pending.reason == "pod_not_running" and "Pending" in str(pending)


@pytest.mark.asyncio
async def test_a_token_of_a_deleted_or_replaced_pod_names_no_node(cluster: Cluster) -> None:
    auth = NodeTokenAuthenticator(cluster.api.api_client())
    token = cluster.token(cluster.pod("ztunnel-a", "node-x"))
    assert await auth.authenticate(token) == "node-x"  # the review is cached now
    cluster.api.core_v1().delete_namespaced_pod("ztunnel-a", NS)
    gone = await _refused(auth, token)  # the pod is read on every request, cache or not
    assert gone.reason == "pod_gone" and "ztunnel-a" in str(gone)
    cluster.pod("ztunnel-a", "node-x")  # same name, another uid
    assert (await _refused(auth, token)).reason == "token_invalid"  # a refusal dropped the cached review
    fresh = await _refused(NodeTokenAuthenticator(cluster.api.api_client()), token)
    assert fresh.reason == "token_invalid" and "does not match" in str(fresh)


@pytest.mark.asyncio
async def test_a_cached_review_ends_with_the_token(cluster: Cluster) -> None:
    zt = cluster.pod("ztunnel-a", "node-x")
    auth = NodeTokenAuthenticator(cluster.api.api_client())
    short = cluster.api.tokens.service_account(NS, SA, ["meshlet"], ttl=1.5, pod=zt)
    assert await auth.authenticate(short) == "node-x"
    refusals: list[NodeAuthError] = []

    async def refused() -> bool:
        try:
            await auth.authenticate(short)
        except NodeAuthError as exc:
            refusals.append(exc)
            return True
        return False

    deadline = asyncio.get_running_loop().time() + 5
    while not await refused():
        assert asyncio.get_running_loop().time() < deadline, "the expired token was still accepted after 5 s"
        await asyncio.sleep(0.1)
    assert refusals[0].reason == "token_invalid" and "expired" in str(refusals[0])


@pytest.mark.asyncio
async def test_an_api_server_that_does_not_answer_is_review_failed_not_a_verdict(cluster: Cluster) -> None:
    auth = NodeTokenAuthenticator(cluster.api.api_client(), timeout=2.0)
    token = cluster.token(cluster.pod("ztunnel-a", "node-x"))
    cluster.api.down()
    try:
        failed = await _refused(auth, token)
    finally:
        cluster.api.up()
    assert failed.reason == "review_failed" and failed.status == 503 and "retry" in str(failed)
    assert await auth.authenticate(token) == "node-x"  # nothing was cached from the failure


# ---- through control's node port: status, reason, metric ----


async def _csr(control: Control, token: str | None, spiffe: str) -> tuple[int, dict[str, Any]]:
    _, csr = new_csr(spiffe)
    ctx = ssl.create_default_context(cadata=control.ca.root_pem)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"https://127.0.0.1:{control.settings.listen[1]}/v1/certificates"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(url, json={"csr": csr.decode()}, headers=headers, ssl=ctx) as resp,
    ):
        return resp.status, await resp.json()


def _refused_metric(control: Control, reason: str) -> float:
    value = control.metrics.registry.get_sample_value("meshlet_control_node_auth_refused_total", {"reason": reason})
    return value or 0.0


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")  # control's request["node"]
async def test_control_signs_for_a_token_of_that_node_and_counts_each_refusal_by_reason(
    cluster: Cluster, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "cluster.yaml").write_text(
        "\n---\n".join(json.dumps(o) for o in (namespace("mesh", True), pod("web-1", "mesh", "node-x", "10.1.0.2")))
    )
    settings = ControlSettings(
        store=store, state=tmp_path / "state", listen=("127.0.0.1", free_port()),
        metrics_listen=("127.0.0.1", free_port()), mesh=MeshSettings(trust_domain=TD),
    )  # fmt: skip
    control = Control(settings)
    # The file source keeps the pods (so this test does not depend on the Kubernetes source); the node tokens
    # are checked against the API server, as `--source kubernetes` does.
    control.node_tokens = NodeTokenAuthenticator(cluster.api.api_client(), timeout=2.0)
    runners = await control.start()
    try:
        await until(lambda: control.store.synced, "the store loaded")
        zt = cluster.pod("ztunnel-a", "node-x")
        spiffe = f"spiffe://{TD}/ns/mesh/sa/web"
        status, body = await _csr(control, cluster.token(zt), spiffe)
        assert status == 200, body
        assert body["spiffeId"] == spiffe
        status, body = await _csr(control, cluster.token(cluster.pod("ztunnel-b", "node-y")), spiffe)
        assert (status, body["reason"]) == (403, "no_pod_on_node")  # the CSR rule, with the token's node
        cases = {
            "token_invalid": cluster.token(zt, audiences=("vault",)),
            "not_ztunnel": cluster.token(cluster.pod("control-0", "node-x", sa="meshlet-control")),
            "token_not_bound": cluster.api.tokens.service_account(NS, SA, ["meshlet"]),
            "pod_not_running": cluster.token(cluster.pod("ztunnel-c", "node-x", phase="Failed")),
        }
        for reason, token in cases.items():
            status, body = await _csr(control, token, spiffe)
            assert (status, body["reason"]) == (401, reason), body
            assert _refused_metric(control, reason) == 1
        status, body = await _csr(control, cluster.token(zt), spiffe.replace("/sa/web", "/sa/other"))
        assert status == 403
        cluster.api.down()
        try:
            status, body = await _csr(control, "any-token", spiffe)
        finally:
            cluster.api.up()
        assert (status, body["reason"]) == (503, "review_failed")
        assert _refused_metric(control, "review_failed") == 1
        status, body = await _csr(control, None, spiffe)
        assert (status, body["reason"]) == (401, "no_node_credential") and "ServiceAccount token" in body["error"]
        control.node_tokens = None  # as with the file source: tokens are not taken at all
        status, body = await _csr(control, cluster.token(zt), spiffe)
        assert (status, body["reason"]) == (401, "no_node_credential") and "only on Kubernetes" in body["error"]
    finally:
        await control.stop()
        for runner in runners:
            await runner.cleanup()
