"""The lab's objects through a Kubernetes API server (a lab `up --source kubernetes`), as kubectl would write them.

Any object is written with server-side apply (field manager `meshlet-lab`), then, when it carries a status and
its kind has a status subresource, the status is written there: an API server ignores the status of a create, and
the lab plays the kubelet that reports a pod Running with its IP. Kinds are mapped to their REST paths through
the server's discovery documents (as kubectl does), so the CRD-served kinds of `lab apply -f` (policies,
HTTPRoutes) go the same way as Pods. Blocking (HTTP): the lab's CLI runs it directly, never from an event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
FIELD_MANAGER = "meshlet-lab"


class LabApiError(RuntimeError):
    """The API server refused or could not be reached; the message names the object and the server's reason."""


@dataclass(frozen=True, slots=True)
class Resource:
    plural: str
    namespaced: bool
    status: bool


def _base(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


class LabApi:
    """A lab's cluster: objects by apiVersion/kind, read and written over the API."""

    def __init__(self, kubeconfig: Path) -> None:
        # The Kubernetes client is imported here, not with the module: every `meshlet lab` command imports
        # this module, and only a Kubernetes lab's commands need the client (a quarter second of imports).
        from control.kube_client import load_client

        self.client = load_client(kubeconfig)
        self._resources: dict[tuple[str, str], Resource] = {}

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """One request; the decoded JSON answer, or LabApiError with the server's message."""
        from kubernetes.client.exceptions import ApiException

        from control.sources.kube_api import request_json, status_reason

        try:
            return request_json(self.client, method, path, body=body, content_type=content_type, timeout=10)
        except ApiException as exc:  # the server answered: its own message (a Status object's)
            raise LabApiError(f"{method} {path}: {exc.status} {status_reason(exc)}") from None
        except Exception as exc:  # urllib3's connection errors and the client's own: one message either way
            raise LabApiError(f"{method} {path}: {type(exc).__name__}: {exc}") from None

    def resource(self, api_version: str, kind: str) -> Resource:
        """Where `kind` of `api_version` is served, from discovery (cached; CRDs created later are looked up)."""
        key = (api_version, kind)
        if key not in self._resources:
            listing = self.request("GET", _base(api_version))
            subresources = {r["name"] for r in listing.get("resources", []) if "/" in r["name"]}
            for r in listing.get("resources", []):
                if "/" not in r["name"]:
                    found = Resource(r["name"], bool(r.get("namespaced")), f"{r['name']}/status" in subresources)
                    self._resources[(api_version, r["kind"])] = found
            if key not in self._resources:
                raise LabApiError(f"the API server does not serve {kind} in {api_version}")
        return self._resources[key]

    def path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        res = self.resource(api_version, kind)
        parts = [_base(api_version)]
        if res.namespaced and (namespace is not None or name is not None):  # no namespace, no name: all of them
            parts.append(f"namespaces/{namespace or 'default'}")
        parts.append(res.plural)
        if name is not None:
            parts.append(name)
        return "/".join(parts)

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Create or update `obj` (server-side apply), then its status when it has one; the object as stored."""
        meta = obj.get("metadata", {})
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        path = self.path(api_version, kind, meta.get("namespace"), meta["name"])
        body = {k: v for k, v in obj.items() if k != "status"}
        body["metadata"] = {k: v for k, v in meta.items() if k not in ("uid", "creationTimestamp", "resourceVersion")}
        stored: Obj = self.request(
            "PATCH", f"{path}?fieldManager={FIELD_MANAGER}&force=true", json.dumps(body), "application/apply-patch+yaml"
        )
        if obj.get("status") and self.resource(api_version, kind).status:
            status = {"apiVersion": api_version, "kind": kind, "status": obj["status"]}
            stored = self.request("PATCH", f"{path}/status", status, "application/merge-patch+json")
        return stored

    def delete(self, obj: Mapping[str, Any]) -> bool:
        """Delete `obj`; False when it was already gone."""
        meta = obj.get("metadata", {})
        path = self.path(str(obj["apiVersion"]), str(obj["kind"]), meta.get("namespace"), meta["name"])
        try:
            self.request("DELETE", path)
        except LabApiError as exc:
            if "NotFound" in str(exc) or "not found" in str(exc):
                return False
            raise
        return True

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        try:
            found: Obj = self.request("GET", self.path(api_version, kind, namespace, name))
        except LabApiError as exc:
            if "not found" in str(exc):
                return None
            raise
        return found

    def list_all(self, api_version: str, kind: str) -> list[Obj]:
        """Every object of a kind, across namespaces, with apiVersion and kind filled in (lists leave them out)."""
        items = self.request("GET", self.path(api_version, kind, None)) or {}
        return [{"apiVersion": api_version, "kind": kind, **item} for item in items.get("items", [])]

    def merge_labels(
        self, api_version: str, kind: str, namespace: str | None, name: str, labels: Mapping[str, Any]
    ) -> Obj:
        """Set labels (a None value removes one), as `kubectl label` does with a merge patch."""
        body = {"metadata": {"labels": dict(labels)}}
        patched: Obj = self.request(
            "PATCH", self.path(api_version, kind, namespace, name), body, "application/merge-patch+json"
        )
        return patched

    def apply_all(self, objs: Iterable[Mapping[str, Any]]) -> list[Obj]:
        return [self.apply(o) for o in objs]
