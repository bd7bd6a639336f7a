"""The validator's status file (``status.json`` in its state directory, read by
``pantheon status``, the harness and the benches) and its optional profile."""

from __future__ import annotations

import cProfile
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.validator_core import Diverged, ValidatorCore
from streams import validator_metrics as metrics
from streams.durable import atomic_write

log = logging.getLogger("pantheon.validator")

PROFILE_ENV = "PANTHEON_VALIDATOR_PROFILE_DIR"
"""When set, the process runs under cProfile and writes its profile there on exit."""


def core_status(core: ValidatorCore) -> dict[str, Any]:
    """What the core reports: heights, ranks, whether it follows its primary (D38, D52)."""
    return {
        "cut_height": core.cut_height,
        "voted_height": core.voted_height,
        "final_height": core.final_height,
        "diverged": core.diverged is not None,
        "rank": core.rank,
        "publisher_rank": core.publisher_rank,
        "publishing": core.publishing,
        "following": core.following,
        "applied": core.counters.applied,
        "feed_misses": core.counters.feed_misses,
    }


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    """Write ``status`` with the process id and the time, atomically."""
    status = {**status, "pid": os.getpid(), "updated_ms": time.time_ns() // 1_000_000}
    atomic_write(state_dir / "status.json", json.dumps(status).encode())


def run_profiled(run: Callable[[], int], name: Callable[[], str]) -> int:
    """``run()``, under cProfile when :data:`PROFILE_ENV` names a directory: the profile is
    written there as ``name()`` when it returns."""
    directory = os.environ.get(PROFILE_ENV)
    if not directory:
        return run()
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run)
    finally:
        profiler.dump_stats(os.path.join(directory, name()))


def report_divergence(event: Diverged, labels: dict[str, str]) -> None:
    """Count and log a divergence (the process then stops)."""
    metrics.DIVERGENCES.labels(**labels).inc()
    log.critical(
        "DIVERGED: this validator's block hash differs from the final one; it stops "
        "voting and exits (its state or code is wrong: compare with `pantheon audit`)",
        extra={
            "height": event.height,
            "own_hash": event.own_hash.hex(),
            "final_hash": event.final_hash.hex(),
        },
    )
