"""Fuzz tests: structured-but-hostile input for every parser that reads what a peer, a user or a pod sends.

Each file targets one parser (the HTTP/2 frame layer, HBONE CONNECT headers, ZDS messages, config-stream
messages, store YAML, CSRs at the CA) and asserts what must hold for any input: only the layer's own errors,
no unbounded state, the last good state kept. `fuzz_settings` gives every fuzzer its budget: small in the test
command (all of them together well under 30 s), larger when the environment says so (the benchmark
command's long run, `.ci/bench`, sets `MESHLET_FUZZ_SCALE`). atheris is not available from this project's package
index, so it is hypothesis only; a failing example found by either run is kept as an explicit `@example`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES_ENV = "MESHLET_FUZZ_EXAMPLES"
"""Examples per fuzz test, overriding each test's small default (to hunt in one target for a while)."""
SCALE_ENV = "MESHLET_FUZZ_SCALE"
"""Multiplies each test's default budget (the benchmark command's long run sets it); `EXAMPLES_ENV` wins."""


def _positive(name: str) -> int:
    text = os.environ.get(name, "")
    return int(text) if text.isdigit() else 0


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings for one fuzz test: `default_examples` examples, unless `MESHLET_FUZZ_EXAMPLES` gives the
    number or `MESHLET_FUZZ_SCALE` a multiple of it.

    The test command's run is derandomized: the same examples on every run and machine, so CI never turns red
    by chance; the long runs explore with fresh randomness, and what they find becomes an `@example` here. No
    per-example deadline: under CI load a slow example is not a bug, and a hang trips the test's timeout. No
    example database: a failure is reproduced from the example hypothesis prints.
    """
    long_run = _positive(EXAMPLES_ENV) or _positive(SCALE_ENV)
    examples = _positive(EXAMPLES_ENV) or default_examples * max(1, _positive(SCALE_ENV))
    return settings(
        max_examples=examples,
        derandomize=not long_run,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
