"""The batcher's Prometheus series."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from ledger.l2 import Reason

RECORDS = Counter("pantheon_l2_records", "Readings accepted into sealed batches", ["institution"])
REJECTED = Counter("pantheon_l2_rejected", "Messages rejected", ["institution", "reason"])
BATCHES = Counter("pantheon_l2_batches", "Batches sealed", ["institution"])
COMMITTED = Counter("pantheon_l2_batches_committed", "Batches committed", ["institution"])
BATCH_SIZE = Gauge("pantheon_l2_last_batch_leaves", "Leaves of the last batch", ["institution"])


def export_at_zero(institution: str) -> None:
    """Every series of the batcher's counters, at 0 until its first event: a dashboard panel
    shows 0, not nothing, and a rate over them is defined from the start."""
    for counter in (RECORDS, BATCHES, COMMITTED):
        counter.labels(institution)
    for reason in Reason:
        REJECTED.labels(institution, reason.value)
