"""Keeping full garbage collections off the path of long-running ledger processes.

Theory of operation
-------------------
* CPython's cyclic collector scans its oldest generation in full whenever that generation
  has grown by a quarter. In a validator or a projector the oldest generation is the world
  state, a dict per record: at about 25,000 records such a collection paused a projector for
  100 to 300 ms (measured with ``gc.callbacks`` under ``bench.projections``), longer than the
  time between two blocks.
* The state is long-lived and acyclic (records are dicts of plain values, freed by reference
  counting when a block replaces them). :class:`HeapSettler` therefore moves every object
  that is alive into the permanent generation (``gc.freeze``), at most once per
  ``interval``, right after collecting the two young generations so that recent cycles are
  reclaimed first. Full collections then scan only what was allocated since, and stay short.
* The cost: cyclic garbage that reached the oldest generation before a freeze is never
  reclaimed. Such garbage is rare here (the hot paths build tuples, dicts and dataclasses
  that reference counting frees) and the young collection before each freeze catches the
  common case (an exception and its traceback), so the leak is bounded by what escapes
  two young collections. The frozen total is exported as ``pantheon_heap_frozen_objects``
  (with the process's other metrics): it should track the state's size, and a steady climb
  beyond it is the leak.
"""

from __future__ import annotations

import gc
import time

from prometheus_client import Gauge

FROZEN = Gauge(
    "pantheon_heap_frozen_objects", "Objects moved out of the garbage collector's generations"
)


class HeapSettler:
    """Call :meth:`settle` after each unit of work (a committed batch, a loop turn)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = time.monotonic()

    def settle(self) -> bool:
        """Freeze what is alive if ``interval`` has passed since the last time; returns
        whether it did."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        gc.collect(1)
        gc.freeze()
        FROZEN.set(gc.get_freeze_count())
        return True


class GcPauses:
    """Times the garbage collector's pauses in this process (``gc.callbacks``), per
    generation: how many, their total and the longest, in milliseconds (status files and
    ``bench.consensus --breakdown`` show them)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total_ms = [0.0, 0.0, 0.0]
        self.max_ms = [0.0, 0.0, 0.0]
        # the longest pause in this thread's CPU time: a wall-clock pause far longer than its
        # CPU time was the host's scheduler (other processes on the cores), not collection
        self.max_cpu_ms = [0.0, 0.0, 0.0]
        self._began = 0.0
        self._began_cpu = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            self._began_cpu = time.thread_time()
            return
        generation = min(2, max(0, info.get("generation", 0)))
        pause = (time.perf_counter() - self._began) * 1000
        cpu = (time.thread_time() - self._began_cpu) * 1000
        self.max_cpu_ms[generation] = max(self.max_cpu_ms[generation], cpu)
        self.count[generation] += 1
        self.total_ms[generation] += pause
        self.max_ms[generation] = max(self.max_ms[generation], pause)

    def close(self) -> None:
        """Stop timing."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, list[float]]:
        """``{"count": [...], "total_ms": [...], "max_ms": [...], "max_cpu_ms": [...]}`` by
        generation 0, 1, 2 (``max_cpu_ms``: the longest pause in CPU time, D64)."""
        return {
            "count": [float(c) for c in self.count],
            "total_ms": [round(t, 2) for t in self.total_ms],
            "max_ms": [round(m, 2) for m in self.max_ms],
            "max_cpu_ms": [round(m, 2) for m in self.max_cpu_ms],
        }
