"""One partition's open window of device messages: what it admitted, what it rejected, and
the batch it seals into. Pure: no clock (``now`` is passed in), no database, no Kafka."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.l2 import RECORD_KIND, Parsed, Reason, batch_id
from ledger.merkle import root
from projections import l2 as store


@dataclass(slots=True)
class Window:
    """The messages of one partition since its last seal, from offset ``start``."""

    partition: int
    start: int  # stored next offset when the window opened
    next: int  # next offset expected
    opened: float = 0.0
    messages: int = 0
    records: int = 0
    ts_low: int = 1 << 62
    ts_high: int = 0
    leaves: list[store.Leaf] = field(default_factory=list)
    rejected: list[store.Rejected] = field(default_factory=list)
    sequences: dict[bytes, int] = field(default_factory=dict)

    def take(self, offset: int, timestamp_ms: int, now: float) -> None:
        """Count the message at ``offset`` (broker time ``timestamp_ms``) into the window."""
        if self.messages == 0:
            self.opened = now
        self.next = offset + 1
        self.messages += 1
        self.ts_low, self.ts_high = min(self.ts_low, timestamp_ms), max(self.ts_high, timestamp_ms)

    def reject(self, offset: int, reason: Reason, kid: bytes, seq: int, raw: bytes) -> None:
        """Record the message at ``offset`` as rejected for ``reason``."""
        self.rejected.append(
            store.Rejected(
                offset=offset, reason=reason.value, device_key_id=kid, sequence=seq, raw=raw
            )
        )

    def accept(self, p: Parsed) -> None:
        """Add an admitted message as a leaf and advance its device's sequence."""
        kid = p.device_key_id
        self.sequences[kid] = p.last_sequence
        self.records += p.count
        self.leaves.append(
            store.Leaf(
                device_key_id=kid,
                first_sequence=p.first_sequence,
                last_sequence=p.last_sequence,
                kind=0 if p.kind == RECORD_KIND else 1,
                leaf=p.leaf,
            )
        )

    def batch(self, institution: str, topic: str) -> store.Batch | None:
        """The batch the window seals into (None: it admitted nothing)."""
        if not self.leaves:
            return None
        return store.Batch(
            batch_id=batch_id(institution, topic, self.partition, self.start, self.next - 1),
            topic=topic,
            partition=self.partition,
            first_offset=self.start,
            last_offset=self.next - 1,
            merkle_root=root([leaf.leaf for leaf in self.leaves]),
            leaf_count=len(self.leaves),
            record_count=self.records,
            window_start_ms=self.ts_low,
            window_end_ms=max(self.ts_low, self.ts_high),
        )

    def following(self) -> Window:
        """The empty window that starts where this one ends."""
        return Window(partition=self.partition, start=self.next, next=self.next)
