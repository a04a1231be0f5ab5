"""Our own lint of the rendered install: what kubernetes-validate cannot see because the schema allows it.

Every container must have cpu and memory requests and limits, a readiness and a liveness probe (an exec probe
counts: the agent has no HTTP port), a securityContext that drops ALL capabilities (adding back only what it
needs) and is never `privileged`, and a pinned image (a tag other than `latest`, or a digest). Every pod runs as
its own ServiceAccount, and a pod with ztunnel never shares the host's network namespace (ztunnel enters pods'
namespaces by fd; on the host's it would capture the node's traffic). `meshlet install` refuses a render with a
finding, so a `--set` or a code change cannot ship a manifest that breaks these.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job")
RULES = ("resources", "probes", "privileged", "capabilities", "host-network", "service-account", "image-tag")


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken rule: where (object and container, "" for the pod itself), which rule, and why."""

    obj: str  # Kind/namespace/name
    container: str
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.obj} container {self.container}" if self.container else self.obj
        return f"{where}: [{self.rule}] {self.message}"


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") == "Pod":
        return dict(obj.get("spec") or {})
    if obj.get("kind") in WORKLOADS:
        return dict(((obj.get("spec") or {}).get("template") or {}).get("spec") or {})
    return None


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    parts = [obj.get("kind", "?"), meta.get("namespace", ""), meta.get("name", "?")]
    return "/".join(p for p in parts if p)


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]  # a registry's port (host:5000/x) is not a tag
    tag = last.rpartition(":")[2] if ":" in last else ""
    return bool(tag) and tag != "latest"


def _container(c: dict[str, Any]) -> Iterator[tuple[str, str]]:
    resources = c.get("resources") or {}
    for kind in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(resources.get(kind) or {})
        if missing:
            yield "resources", f"no {kind} for {', '.join(sorted(missing))}"
    for probe in ("readinessProbe", "livenessProbe"):
        if not c.get(probe):
            yield "probes", f"no {probe}"
    security = c.get("securityContext") or {}
    if security.get("privileged") is True:
        yield "privileged", "privileged: true; grant the capabilities it needs instead"
    if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
        yield "capabilities", "securityContext.capabilities.drop does not include ALL"
    image = str(c.get("image") or "")
    if not _image_pinned(image):
        yield "image-tag", f"image {image!r} is not pinned (use a version tag or a digest, not latest)"


def lint(objects: list[dict[str, Any]]) -> list[Finding]:
    """Every finding in the rendered objects, in their order (empty: the render passes)."""
    findings: list[Finding] = []
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        where = _name(obj)
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if not spec.get("serviceAccountName"):
            findings.append(Finding(where, "", "service-account", "no serviceAccountName (the default one is used)"))
        if (spec.get("securityContext") or {}).get("privileged") is True:
            findings.append(Finding(where, "", "privileged", "the pod's securityContext is privileged"))
        if spec.get("hostNetwork") and any(c.get("name") == "ztunnel" for c in containers):
            findings.append(Finding(where, "ztunnel", "host-network", "ztunnel must not run in the host's network"))
        for c in containers:
            for rule, message in _container(c):
                findings.append(Finding(where, str(c.get("name", "?")), rule, message))
    return findings
