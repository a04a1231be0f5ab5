"""The part of the file store one node's agent reads: Namespaces, and the Pods scheduled on its node.

In Kubernetes mode the agent lists Pods with `spec.nodeName=<node>`; this is the same view over the file source,
so an agent does not parse and hold the other nodes' pods (10,000 pods written into a lab's store cost each agent
seconds of CPU, competing with the data path on the same cores). A file is parsed only when its bytes could name
this node or a Namespace; the check errs towards parsing: any backslash (a YAML escape can spell a name) or a
UTF-16/32 file (its bytes hide ASCII words) is parsed, and the objects are then filtered by their fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("Namespace", "Pod")
"""What the agent reads (control.sources.kube_api.AGENT_RESOURCES)."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """`control.sources.files.StoreView` for the agent of `node`."""

    node: str

    def relevant(self, data: bytes) -> bool:
        return (
            self.node.encode() in data
            or b"Namespace" in data
            or b"\\" in data
            or b"\x00" in data  # UTF-16/32 (with or without a byte-order mark)
            or data.startswith((b"\xff\xfe", b"\xfe\xff"))
        )

    def keep(self, obj: dict[str, Any]) -> bool:
        kind = obj.get("kind")
        if kind == "Namespace":
            return True
        if kind != "Pod":
            return False
        spec = obj.get("spec")
        return isinstance(spec, dict) and spec.get("nodeName") == self.node
