"""A component's log level, changed at runtime through its own admin endpoint (`meshlet log-level`).

ztunnel's is `POST /logging?level=LEVEL` on its localhost admin port (as Istio's ztunnel names it), the agent's
`POST /v1/logging?level=LEVEL` on its 0600 status socket: only the node's root can reach either. The level is the
root logger's, so every module of the process follows it.
"""

from __future__ import annotations

import logging

LEVELS = ("debug", "info", "warning", "error")


class LevelError(ValueError):
    """Not a level; the message names the ones there are."""


def set_level(text: str) -> str:
    """Set the process' level to `text` (any case); returns it as `current` says it."""
    name = text.strip().lower()
    if name not in LEVELS:
        raise LevelError(f"log level {text!r}: expected one of {', '.join(LEVELS)}")
    logging.getLogger().setLevel(name.upper())
    return current()


def current() -> str:
    return logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
