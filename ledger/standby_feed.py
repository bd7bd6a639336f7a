"""What a primary gives its standbys so that they need not read the tx log (D52, D57).

Pure. A following standby (D38) keeps its state by *applying* final blocks rather than
executing them, and does not read ``pantheon.tx`` at all (D57): for every block it
executes, an institution's primary sends a :class:`Feed` with what the block's header is
built from besides the standby's own state: its height, first and last offsets and
timestamp, the offsets in that range that are not entries (ignored markers), each entry's
``tx_id || result_code`` (the ``tx_root`` leaves) and the write set's canonical bytes. The
standby rebuilds the header (:func:`apply_feed`) and keeps the block only if it hashes to
the block's *final* hash: the header binds the offsets and the timestamp, ``tx_root`` every
result code and ``state_root`` the write set's digest, so a match means exactly the block
the quorum signed. A feed is therefore never trusted, whoever wrote it: one that does not
match is dropped and the standby executes the block itself from the tx log. (The entries'
own offsets, derived from the skipped ones, are bound by no hash, as in every copy of a
final block: ``ledger.blocks``.)

Wire format (an internal channel between one institution's operators, written and read by
this module only): ``b"PSF2"``, height, first offset, last offset, timestamp (8 bytes each,
big-endian, the timestamp signed), entry count ``n`` and skipped count ``k`` (4 bytes
each), ``k`` skipped offsets (8 bytes each, increasing), ``n`` leaves of 33 bytes, then the
canonical ``WriteSet`` bytes. A block whose feed would exceed :data:`MAX_FEED_BYTES` (a
Kafka message's limit) gets a *stub* with no entries: it fits no block, so the standby
executes that block itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.blocks import EntryResult
from ledger.errors import DecodeError, InvalidEvent, StateError
from ledger.execution import ExecutedBlock, block_header
from ledger.hashing import HASH_BYTES, sha256
from ledger.members import ValidatorSet
from ledger.results import ResultCode
from ledger.state import WriteSet, root_after

MAGIC = b"PSF2"
LEAF = HASH_BYTES + 1
_HEAD = len(MAGIC) + 4 * 8 + 2 * 4
MAX_FEED_BYTES = 1_000_000
"""Below the brokers' and producers' message limit (1 MiB and a little more)."""


@dataclass(frozen=True, slots=True)
class Feed:
    """One executed block as its primary sent it, unchecked."""

    height: int
    first_offset: int
    last_offset: int
    timestamp_ms: int
    skipped: tuple[int, ...]
    leaves: bytes
    writes: bytes

    @property
    def count(self) -> int:
        """Number of entries (0: a stub)."""
        return len(self.leaves) // LEAF

    def offsets(self) -> list[int]:
        """The entries' offsets: the block's range without the skipped ones."""
        skipped = set(self.skipped)
        return [o for o in range(self.first_offset, self.last_offset + 1) if o not in skipped]


def encode_feed(executed: ExecutedBlock) -> bytes:
    """The feed of ``executed`` (its write set's canonical bytes are memoized, so this costs
    a concatenation, and a walk over the offsets when some are not entries)."""
    results, header = executed.results, executed.header
    first, last = header.first_offset, header.last_offset
    skipped: list[int] = []
    if len(results) != last - first + 1:  # markers inside the range (rare)
        entries = {r.offset for r in results}
        skipped = [o for o in range(first, last + 1) if o not in entries]
    writes = executed.writes.encoded()
    size = _HEAD + 8 * len(skipped) + len(results) * LEAF + len(writes)
    head = [
        MAGIC,
        header.height.to_bytes(8, "big"),
        first.to_bytes(8, "big"),
        last.to_bytes(8, "big"),
        header.timestamp_ms.to_bytes(8, "big", signed=True),
    ]
    if size > MAX_FEED_BYTES:
        return b"".join((*head, bytes(8)))  # a stub: too large for one message
    return b"".join(
        (
            *head,
            len(results).to_bytes(4, "big"),
            len(skipped).to_bytes(4, "big"),
            *(o.to_bytes(8, "big") for o in skipped),
            *(r.leaf() for r in results),
            writes,
        )
    )


def decode_feed(raw: bytes) -> Feed:
    """Split ``raw``; anything but this module's format (or a range the counts do not fill)
    is a :class:`DecodeError`."""
    if len(raw) < _HEAD or raw[: len(MAGIC)] != MAGIC:
        raise DecodeError("not a standby feed")
    height, first, last = (int.from_bytes(raw[i : i + 8], "big") for i in (4, 12, 20))
    timestamp = int.from_bytes(raw[28:36], "big", signed=True)
    count = int.from_bytes(raw[36:40], "big")
    nskip = int.from_bytes(raw[40:44], "big")
    leaves_at = _HEAD + 8 * nskip
    end = leaves_at + count * LEAF
    if height < 1 or first > last or len(raw) < end:
        raise DecodeError("standby feed truncated, of height 0 or with a reversed range")
    skipped = tuple(int.from_bytes(raw[i : i + 8], "big") for i in range(_HEAD, leaves_at, 8))
    if count and (
        count + nskip != last - first + 1
        or any(not first <= o <= last for o in skipped)
        or list(skipped) != sorted(set(skipped))
    ):
        raise DecodeError("standby feed offsets do not fill its range")
    return Feed(height, first, last, timestamp, skipped, bytes(raw[leaves_at:end]), raw[end:])


def apply_feed(
    feed: Feed,
    *,
    prev_hash: bytes,
    prev_root: bytes,
    validators: ValidatorSet,
    final_hash: bytes,
) -> ExecutedBlock | None:
    """The block of ``feed`` on the state whose root is ``prev_root`` after block
    ``prev_hash`` (``validators``: the set of ``feed.height``), if its header hashes to
    ``final_hash``, else None. The header is rebuilt from the feed's range and timestamp,
    the leaves and the write set's digest first, so only certified write-set bytes are ever
    decoded. A stub, an unknown result code or write-set bytes that do not decode are a
    :class:`DecodeError`."""
    if feed.count == 0 or len(feed.leaves) != feed.count * LEAF:
        raise DecodeError(f"feed of height {feed.height} is a stub or its leaves are not whole")
    leaves = feed.leaves
    try:
        results = tuple(
            EntryResult(
                tx_id=leaves[i * LEAF : i * LEAF + HASH_BYTES],
                offset=offset,
                code=ResultCode(leaves[i * LEAF + HASH_BYTES]),
            )
            for i, offset in enumerate(feed.offsets())
        )
        root = root_after(prev_root, sha256(feed.writes))
        header = block_header(feed, prev_hash, results, root, validators)
        if header.hash() != final_hash:
            return None
        writes = WriteSet.from_canonical(feed.writes, certified=True)
    except (ValueError, InvalidEvent, StateError) as exc:
        raise DecodeError(f"standby feed of height {feed.height}: {exc}") from exc
    return ExecutedBlock(header=header, results=results, writes=writes, validator_set=validators)


MAX_FEEDS = 1000
"""Heights whose feeds are kept ahead of the standby's state (the lowest is dropped beyond)."""
MAX_CANDIDATES = 4
"""Feeds kept per height (a restarted primary's, or one forged by another writer: each is
tried against the final hash, so a forged one cannot push out the real one)."""


class FeedBuffer:
    """A following standby's feeds by height, until its blocks are final (D52)."""

    def __init__(self) -> None:
        self._feeds: dict[int, list[Feed]] = {}
        self.malformed = 0

    def add(self, raw: bytes, *, above: int) -> None:
        """Keep the feed ``raw`` if it is of a height above ``above`` (the standby's own),
        and drop those that are not; at most :data:`MAX_CANDIDATES` per height (the oldest
        goes)."""
        try:
            feed = decode_feed(raw)
        except DecodeError:
            self.malformed += 1
            return
        for height in [h for h in self._feeds if h <= above]:  # applied or run already
            del self._feeds[height]
        if feed.height > above:
            candidates = self._feeds.setdefault(feed.height, [])
            candidates.append(feed)
            del candidates[:-MAX_CANDIDATES]
            if len(self._feeds) > MAX_FEEDS:
                del self._feeds[min(self._feeds)]

    def has(self, height: int) -> bool:
        """Whether a feed of ``height`` is here."""
        return height in self._feeds

    def apply(
        self,
        height: int,
        *,
        prev_hash: bytes,
        prev_root: bytes,
        validators: ValidatorSet,
        final_hash: bytes,
    ) -> ExecutedBlock | None:
        """:func:`apply_feed` with the feeds of ``height``, newest first, which are used up
        (with any of lower heights); None when there is none or none gives the hash."""
        candidates = self._feeds.pop(height, [])
        for lower in [h for h in self._feeds if h < height]:
            del self._feeds[lower]
        for feed in reversed(candidates):
            try:
                applied = apply_feed(
                    feed,
                    prev_hash=prev_hash,
                    prev_root=prev_root,
                    validators=validators,
                    final_hash=final_hash,
                )
            except DecodeError:
                continue
            if applied is not None:
                return applied
        return None
