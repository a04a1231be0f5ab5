"""Where labs live on disk: one directory per lab id holding `lab.json`, the store and the logs.

`lab.json` records the plan and the processes started, written atomically after each step of `up`, so
`down` (or an `up` that finds an earlier lab under the same id) knows what to undo even after a crash.
Slots (and so subnets) are handed out under a lock on the labs root, so parallel `up`s never pick the
same one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from control.atomic import write_atomic
from meshlet.lab.plan import MAX_SLOTS, LabPlan, NodePlan, PlanError, PodPlan, ServicePlan
from meshlet.lab.processes import Started

DEFAULT_ROOT = Path("/var/run/meshlet/labs")


def labs_root() -> Path:
    return Path(os.environ.get("MESHLET_LAB_ROOT", str(DEFAULT_ROOT)))


def lab_dir(lab_id: str) -> Path:
    return labs_root() / lab_id


@dataclass(slots=True)
class LabState:
    """What `up` has done so far; mutable while `up` runs, persisted after every step."""

    plan: LabPlan
    directory: str
    processes: dict[str, Started] = field(default_factory=dict)
    """Keyed by what the process is for: `app/<namespace>/<pod>`, later `agent/<node>` and so on."""
    ready: bool = False
    apps: dict[str, Any] = field(default_factory=dict)
    """What `meshlet lab apply` made (`meshlet.lab.apps.AppsState.to_json`); empty until then."""

    @property
    def store(self) -> Path:
        return Path(self.directory) / "store"

    @property
    def logs(self) -> Path:
        return Path(self.directory) / "logs"

    def save(self) -> None:
        data = {
            "plan": asdict(self.plan),
            "directory": self.directory,
            "processes": {k: asdict(v) for k, v in self.processes.items()},
            "ready": self.ready,
            "apps": self.apps,
        }
        write_atomic(Path(self.directory) / "lab.json", json.dumps(data, indent=2).encode(), mode=0o600)

    @classmethod
    def load(cls, lab_id: str) -> LabState | None:
        path = lab_dir(lab_id) / "lab.json"
        try:
            data = json.loads(path.read_text())
            return cls(
                plan=_plan_from_dict(data["plan"]),
                directory=data["directory"],
                processes={k: _started(v) for k, v in data["processes"].items()},
                ready=data["ready"],
                apps=data.get("apps", {}),  # absent in a lab.json written before `lab apply`
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Unreadable, or written by another version: `down` still cleans up by name prefix.
            raise PlanError(f"{path} is unreadable ({exc!r}); `meshlet lab down --id {lab_id}` cleans up") from exc


def _started(d: dict[str, Any]) -> Started:
    return Started(pid=d["pid"], starttime=d["starttime"], argv=tuple(d["argv"]), log=d["log"])


def _plan_from_dict(d: dict[str, Any]) -> LabPlan:
    return LabPlan(
        **{
            **d,
            "nodes": tuple(NodePlan(**n) for n in d["nodes"]),
            "pods": tuple(PodPlan(**p) for p in d["pods"]),
            "services": tuple(ServicePlan(**s) for s in d["services"]),
            "ztunnel_args": tuple(d.get("ztunnel_args", ())),  # absent in a lab.json written before the flag
        }
    )


def known_labs() -> list[str]:
    root = labs_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "lab.json").exists())


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Serialize `up` and `down` of all labs on this machine (slot allocation, shared host state)."""
    root = labs_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def free_slot(exclude_id: str) -> int:
    """The lowest slot no other lab holds; call under `locked()`."""
    used = set()
    for other in known_labs():
        if other == exclude_id:
            continue
        with contextlib.suppress(PlanError):
            st = LabState.load(other)
            if st is not None:
                used.add(st.plan.slot)
    for slot in range(MAX_SLOTS):
        if slot not in used:
            return slot
    raise PlanError(f"all {MAX_SLOTS} lab slots are in use: `meshlet lab down --id ID` some of {known_labs()}")
