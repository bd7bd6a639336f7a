"""The validator's snapshots: begun on the loop, encoded a slice per turn, fsynced in a thread.

Every :data:`SNAPSHOT_EVERY_BLOCKS` final blocks (or :data:`SNAPSHOT_EVERY_SECONDS`) the
producer is flushed and the final state copied; the copy is encoded about
:data:`SNAPSHOT_SLICE_SECONDS` per loop turn and written and fsynced by a thread of its own;
the vote journal is then pruned on the loop. At once, a 10,000 record state took 1.1 to 1.2
s of the loop and stalled every validator at about the same moment (same heights): the
largest swing of the p99 finality latency (D40).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

from confluent_kafka import Producer

from ledger.snapshot import SnapshotEncoder
from ledger.validator_core import ValidatorCore
from streams.durable import SnapshotStore, VoteJournal

log = logging.getLogger("pantheon.validator")

SNAPSHOT_EVERY_BLOCKS = 200
SNAPSHOT_EVERY_SECONDS = 15.0
SNAPSHOT_SLICE_SECONDS = 0.002
"""Loop time per turn spent encoding a snapshot (D40)."""


class Snapshotter:
    """When to snapshot, and the snapshot under way."""

    def __init__(self, store: SnapshotStore, journal: VoteJournal, final_height: int) -> None:
        self.store = store
        self.journal = journal
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        self._job: tuple[Future[float], int] | None = None
        self._encoding: SnapshotEncoder | None = None
        self._began = 0.0
        self._last = (final_height, time.monotonic())
        self.stall_ms = 0.0  # the longest the loop spent on a snapshot
        self.write_ms = 0.0  # the longest a snapshot took from begun to stored

    def maybe(self, core: ValidatorCore, producer: Producer, votes_position: int) -> None:
        """One loop turn's share: finish a written snapshot, encode a slice, or begin one
        if due (``votes_position``: next offset the shell would read from the vote log)."""
        if self._job is not None:
            if not self._job[0].done():
                return
            self.finish()
        if self._encoding is not None:
            self._encode_some()
            return
        height, when = self._last
        final = core.final_height
        due = final - height >= SNAPSHOT_EVERY_BLOCKS or (
            final > height and time.monotonic() - when >= SNAPSHOT_EVERY_SECONDS
        )
        if not due:
            return
        began = time.perf_counter()
        # what the snapshot says was published must be delivered before it can be loaded
        if producer.flush(30) > 0:
            log.warning("producer did not drain; snapshot postponed")
            return
        meta = core.snapshot_meta(votes_position)
        self._encoding = SnapshotEncoder(core.final.final_state.copy(), meta)
        self._last = (final, time.monotonic())
        self._began = time.perf_counter()
        self.stall_ms = max(self.stall_ms, (time.perf_counter() - began) * 1000)

    def _encode_some(self) -> None:
        """Encode the snapshot for about :data:`SNAPSHOT_SLICE_SECONDS` of this turn (in a
        thread, the encoding held the GIL for hundreds of milliseconds and every blocking
        call of the loop waited for it); once encoded, a thread writes and fsyncs it."""
        assert self._encoding is not None
        began = time.perf_counter()
        while time.perf_counter() - began < SNAPSHOT_SLICE_SECONDS:
            raw = self._encoding.step(32)
            if raw is not None:
                height = self._encoding.meta.height
                self._encoding = None
                self._job = (self._thread.submit(self._write, height, raw), height)
                return

    def _write(self, height: int, raw: bytes) -> float:
        """Store a snapshot (in the snapshot thread); returns the milliseconds since the
        snapshot was begun."""
        self.store.save_encoded(height, raw)
        return (time.perf_counter() - self._began) * 1000

    def finish(self) -> None:
        """After a snapshot was written: prune the journal below it (on the loop's thread,
        which appends to the journal)."""
        if self._job is None:
            return
        job, final = self._job
        self._job = None
        try:
            spent_ms = job.result()
        except Exception as exc:  # a full disk: keep the journal, try again when due
            log.warning("snapshot failed", extra={"height": final, "error": str(exc)})
            return
        self.journal.prune_below(final + 1)
        self.write_ms = max(self.write_ms, spent_ms)
        log.info("snapshot", extra={"height": final, "ms": round(spent_ms, 1)})

    def close(self) -> None:
        """Wait for a snapshot being written, and finish it."""
        self._thread.shutdown(wait=True)
        self.finish()
