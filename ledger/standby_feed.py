"""What a primary gives its standbys so that they need not execute blocks (D52).

Pure. A following standby (D38) keeps its state by *applying* final blocks rather than
executing them: for every block it executes, an institution's primary sends a
:class:`Feed`, each entry's ``tx_id || result_code`` (the ``tx_root`` leaves) and the write
set's canonical bytes. The standby rebuilds the block from its own cut block (offsets,
timestamp), its own state (previous hash, validator set) and the feed (:func:`apply_feed`),
and keeps it only if the rebuilt header hashes to the block's *final* hash (the caller's
check): ``tx_root`` binds every result code and ``state_root`` the write set's digest, so a
match means exactly the results and writes the quorum signed. A feed is therefore never
trusted, whoever wrote it: one that does not match is dropped and the standby executes the
block itself.

Wire format (an internal channel between one institution's operators, written and read by
this module only): ``b"PSF1"``, height (8 bytes, big-endian), entry count ``n`` (4 bytes),
``n`` leaves of 33 bytes, then the canonical ``WriteSet`` bytes. A block whose feed would
exceed :data:`MAX_FEED_BYTES` (a Kafka message's limit) gets a *stub*, with no entries and no
writes: it fits no block, so the standby executes that block itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.blocks import EntryResult
from ledger.cutter import CutBlock
from ledger.errors import DecodeError, InvalidEvent, StateError
from ledger.execution import ExecutedBlock, block_header
from ledger.hashing import HASH_BYTES, sha256
from ledger.members import ValidatorSet
from ledger.results import ResultCode
from ledger.state import WriteSet, root_after

MAGIC = b"PSF1"
LEAF = HASH_BYTES + 1
_HEAD = len(MAGIC) + 8 + 4
MAX_FEED_BYTES = 1_000_000
"""Below the brokers' and producers' message limit (1 MiB and a little more)."""


@dataclass(frozen=True, slots=True)
class Feed:
    """One executed block as its primary sent it: leaves and write-set bytes, unchecked."""

    height: int
    leaves: bytes
    writes: bytes

    @property
    def count(self) -> int:
        """Number of entries."""
        return len(self.leaves) // LEAF


def encode_feed(executed: ExecutedBlock) -> bytes:
    """The feed of ``executed`` (its write set's canonical bytes are memoized, so this costs
    a concatenation)."""
    results = executed.results
    height = executed.header.height.to_bytes(8, "big")
    writes = executed.writes.encoded()
    if _HEAD + len(results) * LEAF + len(writes) > MAX_FEED_BYTES:
        return MAGIC + height + bytes(4)  # a stub: too large for one message
    return b"".join(
        (MAGIC, height, len(results).to_bytes(4, "big"), *(r.leaf() for r in results), writes)
    )


def decode_feed(raw: bytes) -> Feed:
    """Split ``raw``; anything but this module's format is a :class:`DecodeError`."""
    if len(raw) < _HEAD or raw[: len(MAGIC)] != MAGIC:
        raise DecodeError("not a standby feed")
    height = int.from_bytes(raw[4:12], "big")
    count = int.from_bytes(raw[12:16], "big")
    end = _HEAD + count * LEAF
    if height < 1 or len(raw) < end:
        raise DecodeError("standby feed truncated or with height 0")
    return Feed(height=height, leaves=bytes(raw[_HEAD:end]), writes=bytes(raw[end:]))


def apply_feed(
    feed: Feed,
    block: CutBlock,
    *,
    prev_hash: bytes,
    prev_root: bytes,
    validators: ValidatorSet,
    final_hash: bytes,
) -> ExecutedBlock | None:
    """The block ``block`` as ``feed`` says it executed, on the state whose root is
    ``prev_root`` after block ``prev_hash`` (``validators``: the set of ``block.height``),
    if its header hashes to ``final_hash``, else None. The header is rebuilt from the
    leaves and the write set's digest first, so only certified write-set bytes are ever
    decoded. A feed of another height or entry count, an unknown result code or write-set
    bytes that do not decode are a :class:`DecodeError`."""
    if feed.height != block.height or feed.count != len(block.entries):
        raise DecodeError(f"feed of height {feed.height} does not fit block {block.height}")
    if len(feed.leaves) != feed.count * LEAF:
        raise DecodeError("standby feed leaves are not whole")
    try:
        results = tuple(
            EntryResult(
                tx_id=feed.leaves[i * LEAF : i * LEAF + HASH_BYTES],
                offset=entry.offset,
                code=ResultCode(feed.leaves[i * LEAF + HASH_BYTES]),
            )
            for i, entry in enumerate(block.entries)
        )
        root = root_after(prev_root, sha256(feed.writes))
        header = block_header(block, prev_hash, results, root, validators)
        if header.hash() != final_hash:
            return None
        writes = WriteSet.from_canonical(feed.writes, certified=True)
    except (ValueError, InvalidEvent, StateError) as exc:
        raise DecodeError(f"standby feed of height {feed.height}: {exc}") from exc
    return ExecutedBlock(header=header, results=results, writes=writes, validator_set=validators)


MAX_FEEDS = 1000
"""Feeds kept ahead of the standby's state (the oldest is dropped beyond that)."""


class FeedBuffer:
    """A following standby's feeds by height, until its blocks are final (D52)."""

    def __init__(self) -> None:
        self._feeds: dict[int, Feed] = {}
        self.malformed = 0

    def add(self, raw: bytes, *, above: int) -> None:
        """Keep the feed ``raw`` if it is of a height above ``above`` (the standby's own),
        and drop those that are not; a later feed of one height replaces the earlier (a
        restarted primary's)."""
        try:
            feed = decode_feed(raw)
        except DecodeError:
            self.malformed += 1
            return
        for height in [h for h in self._feeds if h <= above]:  # applied or run already
            del self._feeds[height]
        if feed.height > above:
            self._feeds[feed.height] = feed
            if len(self._feeds) > MAX_FEEDS:
                del self._feeds[min(self._feeds)]

    def has(self, height: int) -> bool:
        """Whether a feed of ``height`` is here."""
        return height in self._feeds

    def apply(
        self,
        block: CutBlock,
        *,
        prev_hash: bytes,
        prev_root: bytes,
        validators: ValidatorSet,
        final_hash: bytes,
    ) -> ExecutedBlock | None:
        """:func:`apply_feed` with the feed of ``block``'s height, which is used up (with any
        of lower heights); None when there is none, it does not fit or it misses."""
        feed = self._feeds.pop(block.height, None)
        for height in [h for h in self._feeds if h < block.height]:
            del self._feeds[height]
        if feed is None:
            return None
        try:
            return apply_feed(
                feed,
                block,
                prev_hash=prev_hash,
                prev_root=prev_root,
                validators=validators,
                final_hash=final_hash,
            )
        except DecodeError:
            return None
