"""Block cutting: the same log, cut the same way by every validator.

Theory of operation
-------------------
* The cutter is fed ``pantheon.tx`` in offset order: ``(offset, broker timestamp, raw value)``.
  Every message that is not a ``TimeToCut`` marker is an **entry** of the pending block, even
  if it does not decode (execution will reject it as MALFORMED), so blocks account for every
  offset.
* Block ``h`` is cut as soon as it holds ``max_block_txs`` entries, or its entries total at
  least ``max_block_bytes``, or a ``TimeToCut(h)`` marker of this chain arrives while it holds
  at least one entry. Markers for another height (stale or early) or another chain, and
  markers while nothing is pending, are ignored: the first marker for the pending height wins.
  There are no empty blocks.
* A block covers the offsets from the first message after the previous block (ignored markers
  included) to the message that cut it; its timestamp is that last message's broker timestamp.
* Whether a validator should *produce* a marker is :func:`time_to_cut_due`, a pure function of
  ``now`` (passed in), the pending block's oldest entry timestamp and ``block_interval_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import InvalidEvent, StateError
from schemas.codec import decode, encode, registry
from schemas.errors import CodecError


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One message of ``pantheon.tx`` that is part of a block."""

    offset: int
    timestamp_ms: int
    raw: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CutBlock:
    """A cut block, before execution."""

    height: int
    first_offset: int
    last_offset: int
    timestamp_ms: int
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        if not self.entries or self.height < 1:
            raise InvalidEvent("a block has at least one entry and a height >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeToCut:
    """A ``TimeToCut`` marker."""

    chain_id: str
    height: int
    producer: bytes

    def encode(self) -> bytes:
        """Single-object bytes for ``pantheon.tx``."""
        return encode(
            "TimeToCut",
            {"chain_id": self.chain_id, "height": self.height, "producer": self.producer},
        )


_MARKER_PREFIX = b"\xc3\x01" + registry().by_name("TimeToCut").fingerprint_bytes


def as_marker(raw: bytes) -> TimeToCut | None:
    """The marker ``raw`` encodes, or None if it is not a (well-formed) marker."""
    if not raw.startswith(_MARKER_PREFIX):
        return None
    try:
        _, record = decode(raw, "TimeToCut")
    except CodecError:
        return None
    return TimeToCut(
        chain_id=record["chain_id"], height=record["height"], producer=record["producer"]
    )


def time_to_cut_due(now_ms: int, oldest_pending_ms: int | None, block_interval_ms: int) -> bool:
    """Whether a validator holding entries since ``oldest_pending_ms`` should emit a marker."""
    return oldest_pending_ms is not None and now_ms - oldest_pending_ms >= block_interval_ms


class Cutter:
    """Turns the ordered ``pantheon.tx`` log into blocks (one instance per validator)."""

    def __init__(
        self, *, chain_id: str, next_height: int, max_block_txs: int, max_block_bytes: int
    ) -> None:
        if next_height < 1 or max_block_txs < 1 or max_block_bytes < 1:
            raise InvalidEvent("heights start at 1 and limits are positive")
        self.chain_id = chain_id
        self.pending_height = next_height
        self._max_txs = max_block_txs
        self._max_bytes = max_block_bytes
        self._entries: list[Entry] = []
        self._bytes = 0
        self._first_offset: int | None = None
        self._last_offset = -1

    @property
    def oldest_pending_ms(self) -> int | None:
        """Broker timestamp of the pending block's first entry, if any."""
        return self._entries[0].timestamp_ms if self._entries else None

    @property
    def pending_count(self) -> int:
        """Entries held for the pending block."""
        return len(self._entries)

    def entries_since(self, start: int) -> list[Entry]:
        """The pending block's entries from the ``start``-th on."""
        return self._entries[start:]

    def feed(self, offset: int, timestamp_ms: int, raw: bytes) -> CutBlock | None:
        """Consume the next message; returns the block it completes, if any."""
        if offset <= self._last_offset:
            raise StateError(f"offset {offset} fed after {self._last_offset}")
        self._last_offset = offset
        if self._first_offset is None:
            self._first_offset = offset
        marker = as_marker(raw)
        if marker is not None:
            if (
                marker.chain_id == self.chain_id
                and marker.height == self.pending_height
                and self._entries
            ):
                return self._cut(offset, timestamp_ms)
            return None
        self._entries.append(Entry(offset=offset, timestamp_ms=timestamp_ms, raw=raw))
        self._bytes += len(raw)
        if len(self._entries) >= self._max_txs or self._bytes >= self._max_bytes:
            return self._cut(offset, timestamp_ms)
        return None

    def _cut(self, offset: int, timestamp_ms: int) -> CutBlock:
        assert self._first_offset is not None
        block = CutBlock(
            height=self.pending_height,
            first_offset=self._first_offset,
            last_offset=offset,
            timestamp_ms=timestamp_ms,
            entries=tuple(self._entries),
        )
        self.pending_height += 1
        self._entries = []
        self._bytes = 0
        self._first_offset = None
        return block
