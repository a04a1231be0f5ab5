"""Reading ztunnel's Prometheus text: what the demo summarises and the e2e tests assert on.

Prometheus' own parser (prometheus_client.parser) reads the text, so label values come back unescaped, as
Prometheus would store them. Each sample is (sample name, labels, value), by the name written on its line
(a counter's `..._total`, not its family's name). Text that stops being the exposition format (a scrape cut
short by a timeout) yields the samples before the first bad line.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]


def samples(text: str) -> list[Sample]:
    """(name, labels, value) of every sample in `text`."""
    out: list[Sample] = []
    try:
        for family in text_string_to_metric_families(text):
            out += [(s.name, dict(s.labels), s.value) for s in family.samples]
    except ValueError:
        pass  # a truncated or foreign body: what came before it still counts
    return out
