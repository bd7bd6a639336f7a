"""Snapshots of the world state at a final height: canonical, checksummed bytes.

Theory of operation
-------------------
* A snapshot is what a validator needs to resume without replaying the chain from genesis:
  the state's records, its height and root, the hash of the block at that height, and the
  log positions to resume from (``tx_offset``: first ``pantheon.tx`` offset after the block;
  ``votes_offset``: first ``pantheon.votes`` offset that may still matter).
* Layout: ``MAGIC``, an 8-byte big-endian length and that many bytes of JSON metadata, then
  per record a 4-byte key length, the UTF-8 key, a 4-byte value length and the record's
  canonical Avro bytes (schema by key prefix), and finally the SHA-256 of everything before
  it. Decoding checks the magic, every length against the bytes left, and the checksum first,
  so a torn or corrupted file is a :class:`~ledger.errors.DecodeError`, never a wrong state.
* Snapshots are taken only at final heights, so a restored state is one the quorum signed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from ledger.errors import DecodeError, StateError
from ledger.hashing import canonical_bytes, sha256
from ledger.state import WorldState, schema_for
from schemas.codec import decode_canonical
from schemas.errors import CodecError

MAGIC = b"PANTHEON-SNAPSHOT-1\n"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    """Where a snapshot stands in the chain and in the logs."""

    chain_id: str
    height: int
    block_hash: bytes
    state_root: bytes
    tx_offset: int
    votes_offset: int

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "chain_id": self.chain_id,
                "height": self.height,
                "block_hash": self.block_hash.hex(),
                "state_root": self.state_root.hex(),
                "tx_offset": self.tx_offset,
                "votes_offset": self.votes_offset,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SnapshotMeta:
        try:
            doc = json.loads(raw)
            return cls(
                chain_id=str(doc["chain_id"]),
                height=int(doc["height"]),
                block_hash=bytes.fromhex(doc["block_hash"]),
                state_root=bytes.fromhex(doc["state_root"]),
                tx_offset=int(doc["tx_offset"]),
                votes_offset=int(doc["votes_offset"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"snapshot metadata: {exc}") from exc


def encode_snapshot(state: WorldState, meta: SnapshotMeta) -> bytes:
    """The snapshot bytes of ``state`` (which must be at ``meta.height`` with its root)."""
    encoder = SnapshotEncoder(state, meta)
    while (raw := encoder.step(1 << 30)) is None:
        pass
    return raw


class SnapshotEncoder:
    """:func:`encode_snapshot` a few records at a time, for a caller that must not stall
    (a validator's loop, D40). ``state`` must not change until the bytes are out: pass a
    :meth:`~ledger.state.WorldState.copy`."""

    def __init__(self, state: WorldState, meta: SnapshotMeta) -> None:
        if state.height != meta.height or state.root != meta.state_root:
            raise DecodeError("snapshot metadata does not describe this state")
        header = meta.to_json()
        self.meta = meta
        self._parts = [MAGIC, _U64.pack(len(header)), header]
        self._items = state.items()

    def step(self, records: int) -> bytes | None:
        """Encode up to ``records`` more records; the snapshot's bytes once all are done."""
        parts = self._parts
        for _ in range(records):
            item = next(self._items, None)
            if item is None:
                body = b"".join(parts)
                self._parts = []
                return body + sha256(body)
            key, record = item
            key_bytes = key.encode()
            value = canonical_bytes(schema_for(key), record)
            parts += [_U32.pack(len(key_bytes)), key_bytes, _U32.pack(len(value)), value]
        return None


def decode_snapshot(raw: bytes) -> tuple[WorldState, SnapshotMeta]:
    """The state and metadata of snapshot bytes; DecodeError if anything is off."""
    if len(raw) < len(MAGIC) + _U64.size + 32 or not raw.startswith(MAGIC):
        raise DecodeError("not a Pantheon snapshot")
    body, checksum = raw[:-32], raw[-32:]
    if sha256(body) != checksum:
        raise DecodeError("snapshot checksum mismatch (torn or corrupted file)")
    pos = len(MAGIC)
    (header_len,) = _U64.unpack_from(body, pos)
    pos += _U64.size
    if header_len > len(body) - pos:
        raise DecodeError("snapshot metadata length exceeds the file")
    meta = SnapshotMeta.from_json(body[pos : pos + header_len])
    pos += header_len
    records = []
    try:
        while pos < len(body):
            key, pos = _chunk(body, pos)
            value, pos = _chunk(body, pos)
            name = key.decode()
            records.append((name, decode_canonical(schema_for(name), value)))
    except (CodecError, StateError, UnicodeDecodeError, struct.error) as exc:
        raise DecodeError(f"snapshot record: {exc}") from exc
    try:
        state = WorldState.restore(iter(records), height=meta.height, root=meta.state_root)
    except StateError as exc:
        raise DecodeError(str(exc)) from exc
    return state, meta


def _chunk(body: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = _U32.unpack_from(body, pos)
    pos += _U32.size
    if length > len(body) - pos:
        raise DecodeError("snapshot record length exceeds the file")
    return body[pos : pos + length], pos + length
