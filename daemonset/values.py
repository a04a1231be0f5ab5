"""The install's values: what a user may change with `meshlet install --set key=value`, with their defaults.

Every `--set` is checked here, before anything is rendered: an unknown key, a mode outside the allowed ones or a
quantity Kubernetes would refuse is an error naming the key and what it accepts, rather than a manifest the API
server rejects (or, worse, accepts with a meaning nobody intended).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal, get_args

Redirect = Literal["auto", "ebpf", "iptables"]
REDIRECTS: tuple[Redirect, ...] = get_args(Redirect)
PullPolicy = Literal["IfNotPresent", "Always", "Never"]
PULL_POLICIES: tuple[PullPolicy, ...] = get_args(PullPolicy)
CONTAINERS = ("control", "agent", "ztunnel")

# Kubernetes' resource.Quantity, restricted to what makes sense for cpu and memory (no exponent forms).
_QUANTITY = re.compile(r"(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
# A DNS-1123 label: namespaces and the trust domain's labels.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A label key: an optional DNS-subdomain prefix, then a name of up to 63 characters.
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


class ValuesError(ValueError):
    """A `--set` the install cannot use; the message names the key and what it accepts."""


def _version() -> str:
    try:
        return metadata.version("meshlet")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.1.0"


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests and limits of one container, as Kubernetes quantities."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def to_k8s(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def _default_resources() -> dict[str, Resources]:
    return {
        "control": Resources("100m", "128Mi", "1", "512Mi"),
        # The agent reconciles and answers ZDS; compiling the BPF programs (bcc, clang) at start is its peak.
        "agent": Resources("50m", "128Mi", "1", "512Mi"),
        # The data path: every enrolled pod's connections on this node go through it.
        "ztunnel": Resources("200m", "128Mi", "2", "1Gi"),
    }


@dataclass(frozen=True, slots=True)
class Values:
    namespace: str = "meshlet-system"
    image: str = field(default_factory=lambda: f"ghcr.io/meshlet/meshlet:{_version()}")
    image_pull_policy: PullPolicy = "IfNotPresent"
    trust_domain: str = "cluster.local"
    redirect: Redirect = "auto"
    dataplane_label: str = "meshlet.io/dataplane-mode"
    pods_cgroup: str = "kubepods.slice"
    """The pods' cgroup under the host's cgroup v2 root (`kubepods.slice` with the systemd driver, `kubepods`
    with cgroupfs): the eBPF backend attaches its socket programs there."""
    istio_compat: bool = False
    """Control and the agents honor Istio's names too: istio-system is a second root namespace (beside the
    install's), `istio.io/dataplane-mode` enrolls and opts out."""
    control_replicas: int = 1
    ca_secret: str = ""
    """A Secret in the install's namespace holding a plug-in CA (`ca-cert.pem`, `ca-key.pem`, Istio's `cacerts`
    key names) for control's --ca-cert/--ca-key; empty: control makes its own root in its (emptyDir) state."""
    resources: dict[str, Resources] = field(default_factory=_default_resources)

    def with_sets(self, sets: Iterable[str]) -> Values:
        """A copy with each `key=value` applied in order (a later one wins); ValuesError names a bad one."""
        values = self
        for item in sets:
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValuesError(f"--set {item!r}: expected key=value, as in --set redirect=iptables")
            values = values._set(key, value)
        return values

    def _set(self, key: str, value: str) -> Values:
        simple = _SIMPLE_KEYS.get(key)
        if simple is not None:
            # _check has limited the Literal-typed ones (redirect, imagePullPolicy) to their allowed values.
            return dataclasses.replace(self, **{simple: _check(key, value)})  # type: ignore[arg-type]
        if key == "istioCompat":
            if value not in ("true", "false"):
                raise ValuesError(f"--set {key}={value}: expected true or false")
            return dataclasses.replace(self, istio_compat=value == "true")
        if key == "control.replicas":
            if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 10:
                raise ValuesError(f"--set {key}={value}: expected a whole number in 1..10")
            return dataclasses.replace(self, control_replicas=int(value))
        parts = key.split(".")
        if len(parts) == 4 and parts[0] == "resources":
            _, container, kind, resource = parts
            if container not in CONTAINERS:
                raise ValuesError(
                    f"--set {key}: unknown container {container!r}; expected one of {', '.join(CONTAINERS)}"
                )
            if kind not in ("requests", "limits") or resource not in ("cpu", "memory"):
                raise ValuesError(f"--set {key}: expected resources.{container}.<requests|limits>.<cpu|memory>")
            if not _QUANTITY.fullmatch(value):
                raise ValuesError(f"--set {key}={value}: not a Kubernetes quantity (as in 500m, 2, 256Mi, 1Gi)")
            attr = f"{resource}_{kind.removesuffix('s')}"
            changed = dataclasses.replace(self.resources[container], **{attr: value})
            return dataclasses.replace(self, resources={**self.resources, container: changed})
        resources = "resources.<control|agent|ztunnel>.<requests|limits>.<cpu|memory>"
        known = [*_SIMPLE_KEYS, "istioCompat", "control.replicas", resources]
        raise ValuesError(f"--set {key}: unknown key; known keys: {', '.join(known)}")


_SIMPLE_KEYS = {
    "namespace": "namespace",
    "image": "image",
    "imagePullPolicy": "image_pull_policy",
    "trustDomain": "trust_domain",
    "redirect": "redirect",
    "dataplaneLabel": "dataplane_label",
    "podsCgroup": "pods_cgroup",
    "caSecret": "ca_secret",
}


def _check(key: str, value: str) -> str:
    """`value` if it is acceptable for the simple key `key`."""
    if key == "redirect" and value not in REDIRECTS:
        raise ValuesError(f"--set redirect={value}: expected one of {', '.join(REDIRECTS)}")
    if key == "imagePullPolicy" and value not in PULL_POLICIES:
        raise ValuesError(f"--set imagePullPolicy={value}: expected one of {', '.join(PULL_POLICIES)}")
    if key == "namespace" and not _LABEL.fullmatch(value):
        raise ValuesError(f"--set namespace={value}: not a namespace name (lowercase letters, digits and '-')")
    if key == "trustDomain" and not all(_LABEL.fullmatch(part) for part in value.split(".")):
        raise ValuesError(f"--set trustDomain={value}: not a DNS name (as in cluster.local)")
    if key == "dataplaneLabel" and not _LABEL_KEY.fullmatch(value):
        raise ValuesError(f"--set dataplaneLabel={value}: not a label key (as in meshlet.io/dataplane-mode)")
    if key == "image" and (not value or any(c.isspace() for c in value)):
        raise ValuesError(f"--set image={value!r}: expected an image reference, as in ghcr.io/meshlet/meshlet:0.1.0")
    if key == "caSecret" and not all(_LABEL.fullmatch(part) for part in value.split(".")):
        raise ValuesError(f"--set caSecret={value}: not a Secret name (as in cacerts)")
    if key == "podsCgroup" and (not value or value.startswith("/") or ".." in value.split("/")):
        raise ValuesError(f"--set podsCgroup={value}: expected a path under the cgroup root, as in kubepods.slice")
    return value
