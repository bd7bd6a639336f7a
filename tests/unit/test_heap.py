"""Long-lived objects leave the collector's generations, at most once per interval."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from runtime.heap import GcPauses, HeapSettler


class _Node:
    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_settle_freezes_the_living_after_collecting_young_cycles() -> None:
    settler = HeapSettler(interval=0.0)
    living = _Node()
    garbage = _Node()
    garbage.other = garbage  # a cycle: only the collector can free it
    dead = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    assert settler.settle()
    assert dead() is None  # collected before the freeze, not frozen with the living
    assert gc.get_freeze_count() > before
    exported = REGISTRY.get_sample_value("pantheon_heap_frozen_objects")
    assert exported is not None and exported > before
    assert not any(o is living for o in gc.get_objects())  # out of every generation


def test_settle_waits_for_its_interval() -> None:
    settler = HeapSettler(interval=3600.0)
    before = gc.get_freeze_count()
    assert not settler.settle()
    assert gc.get_freeze_count() == before


def test_gc_pauses_count_and_time_the_collections_by_generation() -> None:
    pauses = GcPauses()
    try:
        gc.collect(2)
        gc.collect(0)
        summary = pauses.summary()
    finally:
        pauses.close()
    assert summary["count"][2] >= 1 and summary["count"][0] >= 1
    assert summary["max_ms"][2] > 0 and summary["total_ms"][2] >= summary["max_ms"][2]
    # the longest pause in CPU time: spent collecting, and never more than the pause (D64)
    assert 0 < summary["max_cpu_ms"][2] <= summary["max_ms"][2] + 0.5
    gc.collect(2)
    assert pauses.summary() == summary  # closed: no longer counting
