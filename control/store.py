"""The config store: the last good version of every object, the mesh state derived from them, a version.

Sources report batches (`control.sources.base`); the store converts each raw object once
(`from_k8s`), keeps the previous good version when a new one is invalid, and records the error with its
origin (file), object and reason. After each set of batches it rebuilds the mesh state and, when what
proxies see has changed, bumps the version and tells its listeners (the config stream).

Rebuilding is O(objects) per change: simple and always consistent, and cheap at the scale of a node's
view; an incremental index is the next step if control ever serves large clusters.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control.metrics import ControlMetrics
from control.model.fields import ObjectKey, ValidationError
from control.model.kube import Namespace, Node, Pod, Service, ServiceAccount
from control.model.mesh import BuildCache, MeshSettings, MeshState, build_state
from control.model.routes import HTTPRoute
from control.model.security import AuthorizationPolicy, PeerAuthentication
from control.model.traffic import TrafficPolicy, conflicts
from control.sources.base import SourceBatch

log = logging.getLogger(__name__)

Converted = (
    Namespace
    | Node
    | Pod
    | Service
    | ServiceAccount
    | AuthorizationPolicy
    | PeerAuthentication
    | TrafficPolicy
    | HTTPRoute
)
_NOT_APPLIED = {
    ("networking.istio.io", "VirtualService"): "not applied: meshlet routes with Gateway API HTTPRoutes "
    "(gateway.networking.k8s.io/v1, parentRefs [{group: '', kind: Service, name}]); see README 'Traffic management'",
    ("networking.istio.io", "DestinationRule"): "not applied: meshlet takes its trafficPolicy as a TrafficPolicy "
    "(networking.meshlet.io/v1, same loadBalancer/connectionPool/outlierDetection fields, targetRef to the Service)",
    ("networking.istio.io", "Sidecar"): "not applied: meshlet has no sidecars",
    ("networking.istio.io", "EnvoyFilter"): "not applied: meshlet's node proxy is not Envoy",
    ("gateway.networking.k8s.io", "GRPCRoute"): "not applied yet: gRPC (HTTP/2) is carried at L4; use an HTTPRoute "
    "for HTTP/1 services",
}
"""Kinds a mesh user may expect to take effect that meshlet does not read: reported with what to use instead,
rather than ignored as unrelated kinds (ConfigMaps, Deployments) are."""


def _group(raw: Mapping[str, Any]) -> str:
    return str(raw.get("apiVersion", "")).partition("/")[0]


CONVERTERS: Mapping[str, Callable[[Mapping[str, Any]], Converted]] = {
    "Namespace": Namespace.from_k8s,
    "Node": Node.from_k8s,
    "Pod": Pod.from_k8s,
    "Service": Service.from_k8s,
    "ServiceAccount": ServiceAccount.from_k8s,
    "AuthorizationPolicy": AuthorizationPolicy.from_k8s,
    "PeerAuthentication": PeerAuthentication.from_k8s,
    "HTTPRoute": HTTPRoute.from_k8s,
    "TrafficPolicy": TrafficPolicy.from_k8s,
}


@dataclass(frozen=True, slots=True)
class StoreError:
    """Why something from a source is not in force: where it came from, which object, the reason."""

    origin: str
    object: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.object}: {self.reason}" if self.object else f"{self.origin}: {self.reason}"


def _describe(raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping):
        meta = {}
    ns, name = meta.get("namespace"), meta.get("name")
    return f"{raw.get('kind', '?')} {f'{ns}/' if ns else ''}{name or '?'}"


def _holds_ip(pod: Pod) -> bool:
    """Host-network pods share the node's IP, and finished pods have given theirs back."""
    return not pod.host_network and pod.phase not in ("Succeeded", "Failed")


class ConfigStore:
    """Objects by key, their origins, current errors, and the versioned mesh state."""

    def __init__(self, settings: MeshSettings, metrics: ControlMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ControlMetrics()
        self.epoch = secrets.token_hex(4)
        """Changes on every start of control: versions are only comparable within one epoch."""
        self.version = 0
        self.updated_at = time.time()
        self.synced = False
        """True once the source has delivered its initial state."""
        self._built = BuildCache()
        self.state: MeshState = build_state([], settings, self._built)
        self.objects: dict[ObjectKey, Converted] = {}
        self.revision = 0
        """Counts changes to `objects`, also those that make no new version (a Namespace without pods)."""
        self.errors: dict[str, list[StoreError]] = {}
        self._origin: dict[ObjectKey, str] = {}
        self._pod_ips: dict[str, ObjectKey] = {}
        self._vips: dict[str, ObjectKey] = {}
        self._listeners: list[Callable[[], None]] = []
        self._object_listeners: list[Callable[[], None]] = []
        self._parked: dict[ObjectKey, tuple[dict[str, Any], str]] = {}
        """Objects rejected only for an address another object holds: retried when addresses free up."""
        self.traffic_conflicts: dict[str, str] = {}
        """TrafficPolicy `namespace/name` -> why it is not in force (an older one targets the same Service port)."""

    def subscribe(self, listener: Callable[[], None], objects: bool = False) -> Callable[[], None]:
        """Call `listener` after every new version (`objects`: after every `apply` that changed an object, new
        version or not); returns the function that unsubscribes."""
        listeners = self._object_listeners if objects else self._listeners
        listeners.append(listener)
        return lambda: listeners.remove(listener)

    def apply(self, batches: Sequence[SourceBatch]) -> None:
        revision = self.revision
        for batch in batches:
            self._apply_batch(batch)
        self._retry_parked()
        self.synced = True
        self._report_conflicts()
        new = build_state(self.objects.values(), self.settings, self._built)
        if new != self.state:
            self.state = new
            self.version += 1
            self.updated_at = time.time()
            self.metrics.config_version.set(self.version)
            for listener in list(self._listeners):
                listener()
        kinds = Tally(key.kind for key in self.objects)
        for kind in CONVERTERS:
            self.metrics.objects.labels(kind).set(kinds.get(kind, 0))
        self.metrics.config_errors.set(sum(len(e) for e in self.errors.values()))
        if self.revision != revision:
            for listener in list(self._object_listeners):
                listener()

    def _apply_batch(self, batch: SourceBatch) -> None:
        errors = [StoreError(batch.origin, None, reason) for reason in batch.errors]
        for raw in batch.upserts:
            converter = CONVERTERS.get(str(raw.get("kind")))
            if converter is None:
                hint = _NOT_APPLIED.get((_group(raw), str(raw.get("kind"))))
                if hint is not None:  # a traffic object an Istio user expects to act: say what does instead
                    errors.append(StoreError(batch.origin, _describe(raw), hint))
                continue  # kinds the mesh does not use (ConfigMaps, Deployments, ...) are not errors
            try:
                obj = converter(raw)
            except ValidationError as exc:
                # The last good version (if any) stays in force.
                errors.append(StoreError(batch.origin, _describe(raw), str(exc)))
                continue
            except Exception as exc:  # a converter's bug on odd input costs that object, never the source's watch
                log.exception("converting %s from %s failed", _describe(raw), batch.origin)
                errors.append(StoreError(batch.origin, _describe(raw), f"unreadable: {type(exc).__name__}: {exc}"))
                continue
            self._parked.pop(obj.key, None)
            try:
                self._check_unique(obj)
            except ValidationError as exc:
                errors.append(StoreError(batch.origin, _describe(raw), str(exc)))
                self._parked[obj.key] = (raw, batch.origin)
                continue
            self._put(obj, batch.origin)
        for key in batch.deletes:
            # An object that moved to another file is not deleted by its old file's batch.
            if self._origin.get(key) == batch.origin:
                self._remove(key)
            if key in self._parked and self._parked[key][1] == batch.origin:
                del self._parked[key]
        before = {str(e) for e in self.errors.get(batch.origin, [])}
        for error in errors:
            if str(error) not in before:
                log.error("rejected %s", error)  # once per distinct error, not on every rescan
        if errors:
            self.errors[batch.origin] = errors
        elif self.errors.pop(batch.origin, None):
            log.info("%s: all objects valid again", batch.origin)

    def _report_conflicts(self) -> None:
        """Two TrafficPolicies for one target are both valid, but only the oldest is in force: say so, once."""
        found = conflicts(o for o in self.objects.values() if isinstance(o, TrafficPolicy))
        for ref, reason in found.items():
            if self.traffic_conflicts.get(ref) != reason:
                log.warning("TrafficPolicy %s: %s", ref, reason)
        self.traffic_conflicts = found

    def _retry_parked(self) -> None:
        """Objects waiting for an address: those whose address is free now come into force."""
        for key, (raw, origin) in list(self._parked.items()):
            obj = CONVERTERS[str(raw.get("kind"))](raw)
            try:
                self._check_unique(obj)
            except ValidationError:
                continue
            del self._parked[key]
            self._put(obj, origin)
            remaining = [e for e in self.errors.get(origin, []) if e.object != _describe(raw)]
            if remaining:
                self.errors[origin] = remaining
            else:
                self.errors.pop(origin, None)
            log.info("%s: %s now in force (its address was freed)", origin, key)

    def _check_unique(self, obj: Converted) -> None:
        if isinstance(obj, Pod) and _holds_ip(obj):
            for ip in obj.ips:
                holder = self._pod_ips.get(ip)
                if holder is not None and holder != obj.key:
                    raise ValidationError(f"IP {ip} is already used by {holder}", "status.podIP")
        if isinstance(obj, Service):
            for vip in obj.vips:
                holder = self._vips.get(vip)
                if holder is not None and holder != obj.key:
                    raise ValidationError(f"cluster IP {vip} is already used by {holder}", "spec.clusterIP")

    def _put(self, obj: Converted, origin: str) -> None:
        if self.objects.get(obj.key) != obj:  # a watch resends objects whose fields the mesh reads did not change
            self.revision += 1
        self._remove(obj.key, counted=False)
        self.objects[obj.key] = obj
        self._origin[obj.key] = origin
        if isinstance(obj, Pod) and _holds_ip(obj):
            self._pod_ips.update(dict.fromkeys(obj.ips, obj.key))
        if isinstance(obj, Service):
            self._vips.update(dict.fromkeys(obj.vips, obj.key))

    def _remove(self, key: ObjectKey, counted: bool = True) -> None:
        old = self.objects.pop(key, None)
        self._origin.pop(key, None)
        if old is not None and counted:
            self.revision += 1
        if isinstance(old, Pod):
            for ip in old.ips:
                if self._pod_ips.get(ip) == key:
                    del self._pod_ips[ip]
        if isinstance(old, Service):
            for vip in old.vips:
                if self._vips.get(vip) == key:
                    del self._vips[vip]

    def origin(self, key: ObjectKey) -> str | None:
        """Where the object in force for `key` came from (a file, for the file source)."""
        return self._origin.get(key)

    def pods_on_node(self, node: str) -> list[Pod]:
        return [o for o in self.objects.values() if isinstance(o, Pod) and o.node == node and o.running]

    def all_errors(self) -> list[StoreError]:
        return [e for origin in sorted(self.errors) for e in self.errors[origin]]
