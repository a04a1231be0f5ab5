"""Applying the rendered install to a cluster and removing it: `meshlet install` and `meshlet uninstall`.

Every object goes through server-side apply (field manager `meshlet`, `force`: the install owns what it
renders, whoever changed it since), through the official client's DynamicClient, so a kind's URL comes from the
server's discovery as kubectl's would. CRDs go first and are waited for until Established (a custom resource
cannot be served before), then the namespace, then the rest in render order. Each object is reported as
created, configured (it changed) or unchanged, as `kubectl apply` reports it.

Uninstall deletes what the same values render, in reverse order; an object already gone is not an error, so
it can be re-run. CRDs are kept unless asked for: deleting a CRD deletes every policy users wrote with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

FIELD_MANAGER = "meshlet"
CRD_KIND = "CustomResourceDefinition"
CRD_API = "apiextensions.k8s.io/v1"
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"


class ClusterError(RuntimeError):
    """The cluster refused or did not do what the install needs; the message names the object."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    name: str
    namespace: str
    result: str  # created | configured | unchanged | deleted | absent

    def __str__(self) -> str:
        where = f" ({self.namespace})" if self.namespace else ""
        return f"{self.kind.lower()}/{self.name}{where} {self.result}"


def _describe(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    ns = f" in namespace {meta['namespace']}" if meta.get("namespace") else ""
    return f"{obj['kind']} {meta['name']}{ns}"


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def apply_order(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CRDs, then namespaces, then everything else in render order."""
    crds = [o for o in objects if o["kind"] == CRD_KIND]
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    return crds + namespaces + [o for o in objects if o["kind"] not in (CRD_KIND, "Namespace")]


class Installer:
    """Applies and deletes rendered objects on the cluster behind `api_client`."""

    def __init__(self, api_client: Any) -> None:
        self.dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]

    def _resource(self, obj: dict[str, Any]) -> Any:
        try:
            return self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            raise ClusterError(f"the cluster does not serve {obj['apiVersion']} {obj['kind']}") from None

    def _get(self, resource: Any, name: str, namespace: str | None) -> Any | None:
        try:
            return resource.get(name=name, namespace=namespace)
        except NotFoundError:
            return None

    def apply(self, obj: dict[str, Any]) -> Outcome:
        resource = self._resource(obj)
        meta = obj["metadata"]
        namespace = meta.get("namespace") if resource.namespaced else None
        try:
            before = self._get(resource, meta["name"], namespace)
            after = resource.server_side_apply(
                body=obj, name=meta["name"], namespace=namespace, field_manager=FIELD_MANAGER, force=True
            )
        except ApiException as exc:
            raise ClusterError(f"applying {_describe(obj)}: {_reason(exc)}") from None
        if before is None:
            result = "created"
        elif before.metadata.resourceVersion != after.metadata.resourceVersion:
            result = "configured"
        else:
            result = "unchanged"
        return Outcome(obj["kind"], meta["name"], namespace or "", result)

    def wait_established(self, names: list[str], timeout: float) -> None:
        """Until every CRD in `names` has the condition Established=True, or ClusterError at the deadline."""
        crds = self.dynamic.resources.get(api_version=CRD_API, kind=CRD_KIND)
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting:
            for name in list(waiting):
                crd = self._get(crds, name, None)
                conditions = (crd.to_dict().get("status") or {}).get("conditions") or [] if crd else []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                    waiting.remove(name)
            if waiting and time.monotonic() >= deadline:
                raise ClusterError(f"CRDs not Established after {timeout:.0f}s: {', '.join(waiting)}")
            if waiting:
                time.sleep(0.2)
        # Their kinds are new to discovery: forget what was cached before they existed.
        self.dynamic.resources.invalidate_cache()

    def install(
        self, objects: list[dict[str, Any]], timeout: float = 60.0, report: Callable[[Outcome], None] = print
    ) -> list[Outcome]:
        ordered = apply_order(objects)
        outcomes = []
        crds = [o for o in ordered if o["kind"] == CRD_KIND]
        for obj in crds:
            outcomes.append(self.apply(obj))
            report(outcomes[-1])
        self.wait_established([o["metadata"]["name"] for o in crds], timeout)
        for obj in ordered[len(crds) :]:
            outcomes.append(self.apply(obj))
            report(outcomes[-1])
        return outcomes

    def delete(self, obj: dict[str, Any]) -> Outcome:
        resource = self._resource(obj)
        meta = obj["metadata"]
        namespace = meta.get("namespace") if resource.namespaced else None
        try:
            resource.delete(name=meta["name"], namespace=namespace, body={"propagationPolicy": "Background"})
            result = "deleted"
        except NotFoundError:
            result = "absent"
        except ApiException as exc:
            raise ClusterError(f"deleting {_describe(obj)}: {_reason(exc)}") from None
        return Outcome(obj["kind"], meta["name"], namespace or "", result)

    def uninstall(
        self, objects: list[dict[str, Any]], crds: bool = False, report: Callable[[Outcome], None] = print
    ) -> list[Outcome]:
        """Delete in reverse apply order: workloads and RBAC, the namespace, then (with `crds`) the CRDs."""
        outcomes = []
        for obj in reversed(apply_order(objects)):
            if obj["kind"] == CRD_KIND and not crds:
                continue
            outcomes.append(self.delete(obj))
            report(outcomes[-1])
        return outcomes

    def has_crd(self, name: str) -> bool:
        crds = self.dynamic.resources.get(api_version=CRD_API, kind=CRD_KIND)
        return self._get(crds, name, None) is not None
