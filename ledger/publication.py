"""Who publishes a final block: one operator of the consortium, the next ones on its silence.

Pure (D47, after D38). The operators of the validator set are put in *publication order*
(:func:`publication_order`). The first publishes every final block with its receipts at
once; every other operator holds each final block until a copy with the same bytes is read
from the blocks topic (:meth:`Publication.on_copy`; copies are certified and deterministic,
so any writer of those bytes published what this operator would have), and takes over,
releasing everything it holds and publishing at once from then on, when its oldest held
block has waited :func:`publication_delay_ms`. It steps back when an operator earlier in the
order is seen publishing a height at or beyond its own final height (the copy's label: a
liveness hint, never trusted for safety).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ledger.blocks import block_receipts, encode_finalized
from ledger.execution import ExecutedBlock
from ledger.finality import Finalized
from ledger.members import ValidatorSet
from ledger.results import ResultCode

TAKEOVER_MIN_MS = 5000
TAKEOVER_INTERVALS = 10
MAX_HELD = 1000
"""An operator holding more final blocks than this publishes the oldest (memory bound); also
the most heights ahead of its final height whose copies' digests it remembers."""


@dataclass(frozen=True, slots=True)
class PublishFinal:
    """A final block (FinalizedBlock bytes) and its receipts ``(tx_id, Receipt bytes)``."""

    height: int
    block: bytes
    receipts: tuple[tuple[bytes, bytes], ...]
    codes: tuple[ResultCode, ...]
    timestamp_ms: int


def takeover_delay_ms(block_interval_ms: int) -> int:
    """How long a standby of rank 1 waits for its primary: ``max(5 s, 10 marker intervals)``."""
    return max(TAKEOVER_MIN_MS, TAKEOVER_INTERVALS * block_interval_ms)


def publication_order(validators: ValidatorSet) -> tuple[bytes, ...]:
    """Every operator key id of ``validators`` in publication order (D47): each institution's
    first operator by key id, institutions in id order, then each one's second, and so on."""
    ranked = [sorted(validators.members[inst]) for inst in sorted(validators.members)]
    depth = max((len(ops) for ops in ranked), default=0)
    return tuple(ops[r] for r in range(depth) for ops in ranked if r < len(ops))


def publication_delay_ms(publisher_rank: int, block_interval_ms: int) -> int:
    """How long the operator at ``publisher_rank`` (> 0) in the publication order holds a
    final block nobody published before it publishes it itself (D47): the takeover delay,
    plus ``max(1 s, 2 marker intervals)`` for each operator between it and the first, so
    that the earliest live one takes over and its copies release the others."""
    step = max(1000, 2 * block_interval_ms)
    return takeover_delay_ms(block_interval_ms) + (publisher_rank - 1) * step


def _digest(block: bytes) -> bytes:
    return hashlib.sha256(block).digest()


class Publication:
    """One operator's side of the publication rule (see the module docstring)."""

    def __init__(self, operator_key_id: bytes, block_interval_ms: int) -> None:
        self.key_id = operator_key_id
        self.block_interval_ms = block_interval_ms
        self.order: tuple[bytes, ...] = ()
        self.took_over = False
        self._held: dict[int, tuple[ExecutedBlock, bytes]] = {}
        self._held_since: tuple[int, int] | None = None  # (oldest held height, seen held at)
        self._copies: dict[int, set[bytes]] = {}  # digests of copies read ahead of finality

    def set_validators(self, validators: ValidatorSet) -> None:
        """The validator set changed: so may the order."""
        self.order = publication_order(validators)

    @property
    def rank(self) -> int:
        """This operator's place in the order (0 when it is not in the set)."""
        return self.order.index(self.key_id) if self.key_id in self.order else 0

    @property
    def publishing(self) -> bool:
        """Whether final blocks are published at once (first in the order, or took over)."""
        return self.took_over or self.rank == 0

    @property
    def held_heights(self) -> list[int]:
        """Final heights held back (published by an earlier operator, it hopes)."""
        return list(self._held)

    def on_final(
        self, executed: ExecutedBlock, final: Finalized, final_height: int
    ) -> list[PublishFinal]:
        """``executed`` became final (``final_height`` is the height before it): publish it,
        or hold it unless its copy was read already."""
        height = executed.header.height
        block = encode_finalized(executed.header, final.certificate.record(), executed.results)
        out: list[PublishFinal] = []
        if self.publishing:
            out.append(_publish(executed, block))
        elif _digest(block) not in self._copies.get(height, ()):
            self._held[height] = (executed, block)
            if len(self._held) > MAX_HELD:
                out.append(_publish(*self._held.pop(min(self._held))))
        self._copies.pop(height, None)
        return out

    def on_copy(
        self, height: int, publisher_key_id: bytes, block: bytes, final_height: int
    ) -> None:
        """A copy ``block`` of ``height`` was read, labelled as published by
        ``publisher_key_id``; ``final_height`` is this operator's."""
        digest = _digest(block)
        held = self._held.get(height)
        if held is not None:
            if _digest(held[1]) == digest:
                del self._held[height]
        elif height > final_height:
            self._copies.setdefault(height, set()).add(digest)
            if len(self._copies) > MAX_HELD:
                del self._copies[min(self._copies)]
        if (
            self.took_over
            and height >= final_height
            and publisher_key_id in self.order[: self.rank]
        ):
            self.took_over = False

    def on_tick(self, now_ms: int) -> list[PublishFinal]:
        """Take over if the oldest held block waited long enough."""
        if not self._held or self.publishing:
            if self.publishing and self._held:  # became first (an operator was removed)
                return self._release()
            return []
        oldest = min(self._held)
        if self._held_since is None or self._held_since[0] != oldest:
            self._held_since = (oldest, now_ms)  # a copy of the previous oldest came
        if now_ms - self._held_since[1] < publication_delay_ms(self.rank, self.block_interval_ms):
            return []
        self.took_over = True
        return self._release()

    def _release(self) -> list[PublishFinal]:
        held, self._held = self._held, {}
        self._held_since = None
        return [_publish(*held[h]) for h in sorted(held)]


def _publish(executed: ExecutedBlock, block: bytes) -> PublishFinal:
    header = executed.header
    return PublishFinal(
        height=header.height,
        block=block,
        receipts=tuple(
            zip(
                (r.tx_id for r in executed.results),
                block_receipts(
                    executed.results, height=header.height, block_hash=executed.block_hash
                ),
                strict=True,
            )
        ),
        codes=tuple(r.code for r in executed.results),
        timestamp_ms=header.timestamp_ms,
    )
