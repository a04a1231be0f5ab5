"""On Kubernetes, control publishes the mesh root as ConfigMap `meshlet-root-cert` (key `root-cert.pem`).

The node DaemonSet mounts it as ztunnel's `--root-cert`, the one thing a ztunnel must trust before it can
verify control. Control writes it at start and re-checks it every few minutes (someone may delete or edit it);
when the API server is away it retries with backoff and jitter, logging once per outage, and control keeps
serving meanwhile: nodes that already hold the root need nothing from the API server to reach control.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from meshlet_contracts.backoff import Backoff

log = logging.getLogger(__name__)
NAME = "meshlet-root-cert"
KEY = "root-cert.pem"
RECHECK = 300.0
LABELS = {"app.kubernetes.io/part-of": "meshlet", "app.kubernetes.io/component": "control"}


def publish(api_client: Any, namespace: str, root_pem: str, timeout: float = 5.0) -> str:
    """Create or update the ConfigMap so it holds `root_pem`; returns what was done (created/updated/unchanged)."""
    v1 = client.CoreV1Api(api_client)
    try:
        current = v1.read_namespaced_config_map(NAME, namespace, _request_timeout=timeout)
    except ApiException as exc:
        if exc.status != 404:
            raise
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=NAME, namespace=namespace, labels=LABELS), data={KEY: root_pem}
        )
        v1.create_namespaced_config_map(namespace, body, _request_timeout=timeout)
        return "created"
    if (current.data or {}).get(KEY) == root_pem:
        return "unchanged"
    # A merge patch of the one key: other keys someone added stay, and no resourceVersion race to lose.
    v1.patch_namespaced_config_map(NAME, namespace, {"data": {KEY: root_pem}}, _request_timeout=timeout)
    return "updated"


async def keep_published(api_client: Any, namespace: str, root_pem: str, recheck: float = RECHECK) -> None:
    """Publish now and keep it so, for as long as control runs."""
    backoff = Backoff(0.5, 30.0)
    failing = False
    while True:
        try:
            done = await asyncio.to_thread(publish, api_client, namespace, root_pem)
        except (ApiException, HTTPError, OSError) as exc:
            if not failing:
                why = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else f"{type(exc).__name__}: {exc}"
                log.warning("cannot publish the mesh root as ConfigMap %s/%s: %s; retrying", namespace, NAME, why)
            failing = True
            await asyncio.sleep(backoff.next())
            continue
        if done != "unchanged" or failing:
            log.info("mesh root published as ConfigMap %s/%s (%s)", namespace, NAME, done)
        failing = False
        backoff.reset()
        await asyncio.sleep(recheck)
