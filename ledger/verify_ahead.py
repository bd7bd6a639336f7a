"""Checking the pending block's signatures while the validator waits for its cut (D73).

A validator without signature workers used to check every signature of a block when the
block was cut: one batch of up to ``max_block_txs`` signatures, in every validator at the
same moment, just before each of them votes. On a shared host that burst is the wait
between the cut and the votes. :class:`VerifyAhead` checks the pending entries as they
arrive instead, in batches of at least ``min_batch`` (smaller batches cost more per
signature), and vouches for those that verify, exactly as the shell's workers do (D18):
execution then skips only their verify call, and checks the rest (the last few entries, and
any whose signature failed) as before. The answers are those of
:func:`ledger.tx.signatures_verify`, so the block and its hash do not change.

A signature that fails here is checked once more at execution: a flood of bad signatures
costs at most twice its verification.
"""

from __future__ import annotations

from ledger.cutter import Cutter
from ledger.tx import signatures_verify

VERIFY_AHEAD_MIN = 32
"""Fewest unchecked entries worth a batch (a batch of 32 costs about 20% more per signature
than one of 500 with the compiled verifier; one of 1 about twice)."""


class VerifyAhead:
    """Where the checks of one pending block have got to."""

    def __init__(self) -> None:
        self._block: tuple[int, int] | None = None  # (cutter, pending height) checked
        self._done = 0  # pending entries already checked

    def check(self, cutter: Cutter, vouched: set[bytes], min_batch: int = VERIFY_AHEAD_MIN) -> int:
        """Check the pending entries of ``cutter`` not checked yet, if there are at least
        ``min_batch``; add those whose signature verifies to ``vouched``. Returns how many
        signatures were checked."""
        block = (id(cutter), cutter.pending_height)
        if block != self._block or self._done > cutter.pending_count:
            self._block, self._done = block, 0
        fresh = cutter.entries_since(self._done)
        if len(fresh) < min_batch:
            return 0
        self._done += len(fresh)
        raws = [entry.raw for entry in fresh if entry.raw not in vouched]
        for raw, ok in zip(raws, signatures_verify(raws), strict=True):
            if ok:
                vouched.add(raw)
        return len(raws)
