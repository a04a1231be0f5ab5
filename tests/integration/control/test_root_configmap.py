"""Control on Kubernetes publishes the mesh root as ConfigMap `meshlet-root-cert`, whenever the API server lets it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from control.root_configmap import keep_published, publish
from tests.conftest import until
from tests.kubeapi import KubeApiServer, errors

NS = "meshlet-system"
ROOT = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"


def _data(api: KubeApiServer) -> dict[str, str] | None:
    try:
        cm = api.store.get(api.store.types[("", "v1", "configmaps")], NS, "meshlet-root-cert")
    except errors.ApiError:
        return None
    return dict(cm.get("data") or {})


def test_publish_creates_then_updates_only_the_root_key() -> None:
    with KubeApiServer() as api:
        client = api.api_client()
        api.core_v1().create_namespace({"metadata": {"name": NS}})
        assert publish(client, NS, ROOT) == "created"
        assert publish(client, NS, ROOT) == "unchanged"
        api.core_v1().patch_namespaced_config_map("meshlet-root-cert", NS, {"data": {"note": "kept"}})
        assert publish(client, NS, ROOT.replace("root", "new")) == "updated"
        assert _data(api) == {"root-cert.pem": ROOT.replace("root", "new"), "note": "kept"}


@pytest.mark.asyncio
async def test_an_api_server_down_at_start_gets_the_root_once_it_is_back() -> None:
    with KubeApiServer() as api:
        api.core_v1().create_namespace({"metadata": {"name": NS}})
        api.down()
        task = asyncio.create_task(keep_published(api.api_client(), NS, ROOT))
        try:
            await asyncio.sleep(0.3)  # a few refused tries
            assert not task.done()  # still trying, not failed
            api.up()
            await until(lambda: _data(api) is not None, "the ConfigMap published after the outage", timeout=40)
            assert _data(api) == {"root-cert.pem": ROOT}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
