"""Reading ztunnel's Prometheus text: what the demo summarises and the e2e tests assert on.

Only the sample lines matter here (`name{label="value",...} number`, labels optional); comments and
anything malformed are skipped. Label values are kept as written (escapes are not undone).
"""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"(\w+)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


def samples(text: str) -> list[Sample]:
    """(name, labels, value) of every sample in `text`."""
    out: list[Sample] = []
    for line in text.splitlines():
        m = _SAMPLE.fullmatch(line)
        if m:
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out
