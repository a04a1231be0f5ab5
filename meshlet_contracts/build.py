"""Which build of meshlet a process runs: what `meshlet version` collects from every component.

Each component reports `build()` in its status (ztunnel's /config_dump, the agent's status API, control's
/debug/status), so a half-done upgrade shows as two versions side by side.
"""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

UNKNOWN = "unknown"


@cache
def version() -> str:
    """The installed meshlet package's version ("unknown" when run from a tree that is not installed)."""
    try:
        return _package_version("meshlet")
    except PackageNotFoundError:
        return UNKNOWN


def build() -> dict[str, str]:
    """{version, python}: what a component says about its build."""
    return {"version": version(), "python": platform.python_version()}
