"""Fixtures of the reliability suite: one fresh lab per redirection backend, shared by the suite's tests in
the order they are written (the disruptive upgrades last), and the figures, written to the report when the
session ends and printed in pytest's summary.

The suite builds network namespaces (root only, like tests/e2e). Its tests disrupt the lab on purpose
(kills, upgrades, an outage) but each leaves it working: a test that could not is the one that fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import BACKENDS, Lab, lab_of
from tests.reliability.report import RESULTS, Figures, table

_FIGURES = Figures()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "reliability_lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="the reliability suite builds network namespaces: run as root"))


@pytest.fixture(scope="module", params=BACKENDS)
def reliability_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh 2-node x 2-pod lab of one backend (its name in `status["backend"]`), for the module's tests."""
    with lab_of("--redirect", request.param) as running:
        running.status["backend"] = request.param
        yield running


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    yield _FIGURES
    if _FIGURES.measured:
        _FIGURES.save()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES.measured:
        terminalreporter.write_sep("-", f"reliability figures (this run; all kept in {RESULTS})")
        terminalreporter.write_line(table({"backends": _FIGURES.measured}))
