"""Block headers, entry results, finalized blocks and receipts.

Theory of operation
-------------------
* A header holds ``height``, ``prev_hash``, ``first_offset``, ``last_offset``, ``tx_root``,
  ``state_root``, ``validator_set_hash`` and ``timestamp_ms`` (DESIGN.md section 4.3); the
  block hash is SHA-256 of its canonical bytes.
* ``tx_root`` is the RFC 6962 root over one leaf per entry, in log order:
  ``tx_id (32 bytes) || result_code (1 byte)``. An entry that does not decode is named by the
  SHA-256 of its raw bytes.
* A ``FinalizedBlock`` is the header, its quorum certificate and the entry results; every
  validator derives the same one, hence the same bytes. The results' tx ids and codes are
  bound to the header by ``tx_root``; their offsets are only checked to increase within
  ``[first_offset, last_offset]`` (the leaf format of DESIGN.md does not include them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.errors import DecodeError, InvalidEvent, ProofError
from ledger.hashing import HASH_BYTES, canonical_bytes, sha256
from ledger.merkle import MerkleError, inclusion_proof, root, verify_inclusion
from ledger.results import ResultCode
from schemas.codec import HEADER_BYTES, MAGIC, decode, encode, registry
from schemas.errors import CodecError

_LONG = 1 << 63
# a Receipt's bytes: header, tx_id (length 32: 0x40), height, offset, result_code, block_hash
_RECEIPT_HEAD = MAGIC + registry().by_name("Receipt").fingerprint_bytes + b"\x40"
_FINALIZED_HEAD = MAGIC + registry().by_name("FinalizedBlock").fingerprint_bytes
_SMALL = 1 << 62  # zigzag of a non-negative long below this is the plain varint of 2n


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryResult:
    """The outcome of one block entry."""

    tx_id: bytes
    offset: int
    code: ResultCode

    def __post_init__(self) -> None:
        if len(self.tx_id) != HASH_BYTES or self.offset < 0:
            raise InvalidEvent("entry result needs a 32-byte tx id and an offset >= 0")

    def leaf(self) -> bytes:
        """The ``tx_root`` leaf: ``tx_id || result_code``."""
        return self.tx_id + bytes([int(self.code)])

    def record(self) -> dict[str, Any]:
        """The ``TxResult`` record."""
        return {"tx_id": self.tx_id, "offset": self.offset, "result_code": int(self.code)}


def tx_root(results: Sequence[EntryResult]) -> bytes:
    """RFC 6962 root over the entries' leaves."""
    return root([r.leaf() for r in results])


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockHeader:
    """A block header; :meth:`hash` is the block hash."""

    height: int
    prev_hash: bytes
    first_offset: int
    last_offset: int
    tx_root: bytes
    state_root: bytes
    validator_set_hash: bytes
    timestamp_ms: int

    def __post_init__(self) -> None:
        if self.height < 1 or not 0 <= self.first_offset <= self.last_offset:
            raise InvalidEvent("height must be >= 1 and offsets ordered and non-negative")
        if max(self.height, self.last_offset) >= _LONG or not -_LONG <= self.timestamp_ms < _LONG:
            # else hash() fails: the canonical header holds them as Avro longs
            raise InvalidEvent("height, offsets and timestamp_ms must fit in 64 bits")
        for name in ("prev_hash", "tx_root", "state_root", "validator_set_hash"):
            if len(getattr(self, name)) != HASH_BYTES:
                raise InvalidEvent(f"{name} must be {HASH_BYTES} bytes")

    def record(self) -> dict[str, Any]:
        """The ``BlockHeader`` record."""
        return {
            "height": self.height,
            "prev_hash": self.prev_hash,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "tx_root": self.tx_root,
            "state_root": self.state_root,
            "validator_set_hash": self.validator_set_hash,
            "timestamp_ms": self.timestamp_ms,
        }

    def hash(self) -> bytes:
        """SHA-256 of the canonical header."""
        return sha256(canonical_bytes("BlockHeader", self.record()))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BlockHeader:
        """Build from a ``BlockHeader`` record."""
        return cls(**dict(record))


def tx_proof(results: Sequence[EntryResult], index: int) -> list[bytes]:
    """RFC 6962 inclusion proof of entry ``index`` in the block's ``tx_root``."""
    return inclusion_proof([r.leaf() for r in results], index)


def verify_tx_proof(
    result: EntryResult, index: int, size: int, proof: Sequence[bytes], header: BlockHeader
) -> None:
    """Raise :class:`ProofError` unless ``result`` is entry ``index`` of ``header``'s block."""
    try:
        verify_inclusion(result.leaf(), index, size, proof, header.tx_root)
    except MerkleError as exc:
        raise ProofError(f"{type(exc).__name__}: {exc}") from exc


def receipt(result: EntryResult, *, height: int, block_hash: bytes) -> bytes:
    """Single-object bytes of the ``Receipt`` of one entry (for ``pantheon.receipts``)."""
    return encode(
        "Receipt",
        {
            "tx_id": result.tx_id,
            "height": height,
            "offset": result.offset,
            "result_code": int(result.code),
            "block_hash": block_hash,
        },
    )


def _varint(value: int) -> bytes:
    """Avro's zigzag varint of a long in ``[0, _SMALL)``."""
    n = value << 1
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def block_receipts(
    results: Sequence[EntryResult], *, height: int, block_hash: bytes
) -> list[bytes]:
    """:func:`~ledger.blocks.receipt` of each entry of a block, byte for byte, a few times
    faster: the fields are written directly (what every receipt of the block shares, once);
    anything outside the usual ranges goes through the codec."""
    if len(block_hash) != HASH_BYTES or not 0 <= height < _SMALL:
        return [receipt(r, height=height, block_hash=block_hash) for r in results]
    middle, tail = _varint(height), b"\x40" + block_hash
    out = []
    for r in results:
        if len(r.tx_id) == HASH_BYTES and 0 <= r.offset < _SMALL and 0 <= r.code < 64:
            out.append(
                b"".join(
                    (_RECEIPT_HEAD, r.tx_id, middle, _varint(r.offset), bytes((2 * r.code,)), tail)
                )
            )
        else:
            out.append(receipt(r, height=height, block_hash=block_hash))
    return out


def peek_height(raw: bytes) -> int | None:
    """The height a ``FinalizedBlock`` message names, read from its first bytes (the header's
    first field) without decoding or checking anything else; ``None`` if they do not parse.

    Only an index for grouping copies: nothing read this way is trusted.
    """
    if not raw.startswith(_FINALIZED_HEAD):
        return None
    value = shift = 0
    for pos in range(HEADER_BYTES, min(len(raw), HEADER_BYTES + 10)):
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value >> 1 if not value & 1 else None
        shift += 7
    return None


def encode_finalized(
    header: BlockHeader, certificate: Mapping[str, Any], results: Sequence[EntryResult]
) -> bytes:
    """Single-object bytes of a ``FinalizedBlock`` (certificate as a QuorumCertificate record).

    Every validator encodes every final block (D47 compares copies by bytes): the header and
    certificate go through the codec with no results, whose encoding (the last field: an
    empty array, one 0 byte) is then replaced by the results written directly, as
    :func:`block_receipts` writes receipts; results outside the usual ranges go through the
    codec (D51)."""
    written = _results_bytes(results)
    record: dict[str, Any] = {"header": header.record(), "certificate": certificate}
    if written is None:
        return encode("FinalizedBlock", {**record, "results": [r.record() for r in results]})
    return encode("FinalizedBlock", {**record, "results": []})[:-1] + written


_CODES = tuple(bytes((2 * code,)) for code in range(64))


def _results_bytes(results: Sequence[EntryResult]) -> bytes | None:
    """The Avro array of the results' ``TxResult`` records (one block, then 0), or None if
    one is outside the ranges written here."""
    if not results:
        return b"\x00"
    parts = [_varint(len(results))]
    for r in results:
        if len(r.tx_id) != HASH_BYTES or not 0 <= r.offset < _SMALL or not 0 <= r.code < 64:
            return None
        parts += (b"\x40", r.tx_id, _varint(r.offset), _CODES[r.code])
    parts.append(b"\x00")
    return b"".join(parts)


def decode_finalized(raw: bytes) -> tuple[BlockHeader, dict[str, Any], tuple[EntryResult, ...]]:
    """Decode a ``FinalizedBlock``; checks the header's shape and that results match tx_root."""
    try:
        _, record = decode(raw, "FinalizedBlock")
        header = BlockHeader.from_record(record["header"])
        results = tuple(
            EntryResult(tx_id=r["tx_id"], offset=r["offset"], code=ResultCode(r["result_code"]))
            for r in record["results"]
        )
    except (CodecError, InvalidEvent, ValueError) as exc:
        raise DecodeError(str(exc)) from exc
    if tx_root(results) != header.tx_root:
        raise DecodeError("results do not match the header's tx_root")
    offsets = [r.offset for r in results]
    if (
        not offsets
        or offsets != sorted(set(offsets))
        or offsets[0] < header.first_offset
        or offsets[-1] > header.last_offset
    ):
        raise DecodeError("result offsets are not increasing within the block's range")
    return header, record["certificate"], results
