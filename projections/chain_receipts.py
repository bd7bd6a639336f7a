"""The chain projection's cross-check of the ``receipts`` topic against the final blocks.

Receipts are a function of the final blocks (``chain.receipts`` is a view), so the topic is
read only to check it: each receipt is compared with the projected entry at its offset, and
malformed or contradicting receipts are counted and logged, never written. Most receipts are
byte for byte the ones of a recently projected block (every validator publishes the same
bytes), so they are checked by one lookup, without decoding.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from typing import Any

import psycopg

from ledger.blocks import block_receipts
from ledger.execution import ExecutedBlock
from schemas.codec import decode
from schemas.errors import CodecError

log = logging.getLogger("pantheon.projections.chain")

MAX_HELD_RECEIPTS = 100_000
RECENT_RECEIPT_HEIGHTS = 64  # projected heights whose receipt bytes are kept for comparison


class ReceiptCheck:
    """Receipts held until their block is projected, then compared; outcomes in ``counters``
    (``receipts_verified``, ``_malformed``, ``_mismatch``, ``_unchecked``)."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self._held: dict[int, list[dict[str, Any]]] = {}
        self._held_count = 0
        self.reset_recent()

    def reset_recent(self) -> None:
        """Forget the receipt bytes of the projected heights (the projection resumed)."""
        self._recent: dict[bytes, int] = {}
        self._recent_by_height: deque[tuple[int, list[bytes]]] = deque()

    def remember(self, executed: ExecutedBlock) -> None:
        """Keep the exact receipt bytes of a block being projected."""
        header = executed.header
        expected = block_receipts(
            executed.results, height=header.height, block_hash=executed.block_hash
        )
        for raw in expected:
            self._recent[raw] = header.height
        self._recent_by_height.append((header.height, expected))
        while len(self._recent_by_height) > RECENT_RECEIPT_HEIGHTS:
            height, old = self._recent_by_height.popleft()
            for raw in old:
                if self._recent.get(raw) == height:
                    del self._recent[raw]

    def check(self, cur: psycopg.Cursor[Any], raws: list[bytes], height: int) -> None:
        """Check ``raws`` against the blocks projected up to ``height`` (held until then)."""
        known = self._recent
        unknown = []
        for raw in raws:
            if raw in known:  # byte for byte the receipt of a projected entry
                self.counters["receipts_verified"] += 1
            else:
                unknown.append(raw)
        self._hold(unknown)
        due = [o for o, rs in self._held.items() if rs[0]["height"] <= height]
        if not due:
            return
        cur.execute(
            "SELECT tx_offset, tx_id, height, result_code, hash FROM chain.transactions "
            "JOIN chain.blocks USING (height) WHERE tx_offset = ANY(%s)",
            (due,),
        )
        expected = {int(r[0]): (bytes(r[1]), r[2], r[3], bytes(r[4])) for r in cur.fetchall()}
        for offset in due:
            for record in self._held.pop(offset):
                self._held_count -= 1
                got = (
                    record["tx_id"],
                    record["height"],
                    record["result_code"],
                    record["block_hash"],
                )
                if expected.get(offset) == got:
                    self.counters["receipts_verified"] += 1
                else:
                    self.counters["receipts_mismatch"] += 1
                    log.warning("a receipt contradicts the final blocks", extra={"offset": offset})

    def _hold(self, raws: list[bytes]) -> None:
        decoded: dict[bytes, dict[str, Any] | None] = {}  # validators send identical copies
        for raw in raws:
            if raw not in decoded:
                try:
                    decoded[raw] = decode(raw, "Receipt")[1]
                except CodecError:
                    decoded[raw] = None
            record = decoded[raw]
            if record is None:
                self.counters["receipts_malformed"] += 1
                continue
            if self._held_count >= MAX_HELD_RECEIPTS:
                self.counters["receipts_unchecked"] += 1
                continue
            self._held.setdefault(record["offset"], []).append(record)
            self._held_count += 1
