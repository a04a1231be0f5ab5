"""The collector around big config conversions: off while one runs, on again after, what it made frozen, and
everything let back every so often so that frozen cycles are collected in the end."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ztunnel.config.heap import Freezer


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def test_no_collection_while_converting_and_the_new_objects_are_frozen_before_it_is_back() -> None:
    freezer = Freezer(every=10)
    gc.enable()
    with freezer.converting():
        assert not gc.isenabled()
        index = [{"uid": str(i)} for i in range(1000)]  # what a conversion makes
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(index)  # out of every later pass, the young ones included
    assert freezer.freezes == 1


def test_an_error_while_converting_turns_the_collector_back_on() -> None:
    freezer = Freezer()
    gc.enable()
    with pytest.raises(ValueError), freezer.converting():
        raise ValueError("a nacked message")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with Freezer().converting():
        pass
    assert not gc.isenabled()


def test_every_so_many_freezes_everything_is_let_back_for_one_full_pass() -> None:
    freezer = Freezer(every=3)
    for _ in range(2):
        with freezer.converting():
            pass
    assert gc.get_freeze_count() > 0 and freezer.unfreezes == 0
    with freezer.converting():
        pass
    assert gc.get_freeze_count() == 0 and freezer.unfreezes == 1 and freezer.freezes == 0


def test_an_hour_after_the_last_unfreeze_the_next_conversion_lets_everything_back() -> None:
    freezer = Freezer(every=1000, after=0.0)
    with freezer.converting():
        pass
    assert gc.get_freeze_count() == 0 and freezer.unfreezes == 1
