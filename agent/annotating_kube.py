"""Recording a pod's enrollment on Kubernetes: a JSON merge patch of the pod's `metadata.annotations`.

The patch names only our annotation (`agent.annotating.ANNOTATION`; null removes it), so it never races with
whoever else writes the pod's labels, annotations or status. Blocking: the reconciler runs it in a thread.
A pod that is already gone needs nothing; any other failure is raised as an `OSError`, which the reconciler
logs and retries on its next pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from agent.annotating import ANNOTATION
from control.sources.kube_api import MERGE_PATCH, request_json, status_reason


class AnnotationError(OSError):
    """The API server did not take the patch (unreachable, forbidden, ...): tried again on the next pass."""


class PodAnnotator:
    """Sets or removes the redirection annotation of pods, through one API client made on first use."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self.client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()

    def _api(self) -> Any:
        with self._lock:  # calls come from the default executor's threads: one client, made once
            if self._client is None:
                self._client = self.client_factory()
            return self._client

    def __call__(self, namespace: str, name: str, value: str | None) -> bool:
        """Patch Pod namespace/name; returns False when the pod no longer exists."""
        body = {"metadata": {"annotations": {ANNOTATION: value}}}
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        try:
            request_json(self._api(), "PATCH", path, body=body, content_type=MERGE_PATCH, timeout=(5.0, 15.0))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise AnnotationError(f"patching pod {namespace}/{name}: HTTP {exc.status}: {status_reason(exc)}") from None
        except Exception as exc:  # unreachable: urllib3's errors are not OSErrors
            raise AnnotationError(f"patching pod {namespace}/{name}: {type(exc).__name__}: {exc}") from None
        return True
