"""Block votes: an operator's Ed25519 signature over a block hash.

Theory of operation: a vote's signed part is ``VoteBody`` (height, block hash, operator key
id); the signature is over ``VOTE_DOMAIN || canonical VoteBody`` by the key whose SHA-256 is
the operator key id, and the vote carries that public key so it can be checked without state.
Whether the operator may vote at that height is the finality tracker's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.errors import DecodeError, InvalidEvent
from ledger.hashing import HASH_BYTES, canonical_bytes, sha256
from ledger.keys import (
    KEY_ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    VOTE_DOMAIN,
    KeyPair,
    verify,
    verify_batch,
)
from schemas.codec import decode, encode
from schemas.errors import CodecError


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    """A ``BlockVote``: who signed which block hash at which height."""

    height: int
    block_hash: bytes
    operator_key_id: bytes
    public_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if self.height < 0:
            raise InvalidEvent("vote height must be non-negative")
        if (
            len(self.block_hash) != HASH_BYTES
            or len(self.operator_key_id) != KEY_ID_BYTES
            or len(self.public_key) != PUBLIC_KEY_BYTES
            or len(self.signature) != SIGNATURE_BYTES
        ):
            raise InvalidEvent("vote field of the wrong length")

    def body(self) -> dict[str, Any]:
        """The ``VoteBody`` record."""
        return {
            "height": self.height,
            "block_hash": self.block_hash,
            "operator_key_id": self.operator_key_id,
        }

    def record(self) -> dict[str, Any]:
        """The ``BlockVote`` record."""
        return {"body": self.body(), "public_key": self.public_key, "signature": self.signature}

    def encode(self) -> bytes:
        """Single-object bytes for ``pantheon.votes``."""
        return encode("BlockVote", self.record())

    def is_valid(self) -> bool:
        """Signature valid and made by the key named ``operator_key_id``."""
        return sha256(self.public_key) == self.operator_key_id and verify(
            self.public_key, self.signature, VOTE_DOMAIN, canonical_bytes("VoteBody", self.body())
        )

    def signature_item(self) -> tuple[bytes, bytes, bytes]:
        """``(public key, signature, signed body)``: what :meth:`is_valid` verifies (under
        ``VOTE_DOMAIN``)."""
        return self.public_key, self.signature, canonical_bytes("VoteBody", self.body())

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Vote:
        """Build from a ``BlockVote`` record (raises :class:`InvalidEvent` if ill-formed)."""
        body = record["body"]
        return cls(
            height=body["height"],
            block_hash=body["block_hash"],
            operator_key_id=body["operator_key_id"],
            public_key=record["public_key"],
            signature=record["signature"],
        )


def votes_valid(votes: Sequence[Vote]) -> list[bool]:
    """:meth:`Vote.is_valid` of each vote, in order, the signatures checked as one batch."""
    keyed = [sha256(vote.public_key) == vote.operator_key_id for vote in votes]
    items = [vote.signature_item() for vote, ok in zip(votes, keyed, strict=True) if ok]
    answers = iter(verify_batch(items, domain=VOTE_DOMAIN))
    return [ok and next(answers) for ok in keyed]


def sign_vote(key: KeyPair, *, height: int, block_hash: bytes) -> Vote:
    """The operator ``key``'s vote for ``block_hash`` at ``height``."""
    body = {"height": height, "block_hash": block_hash, "operator_key_id": key.key_id}
    return Vote(
        height=height,
        block_hash=block_hash,
        operator_key_id=key.key_id,
        public_key=key.public_key,
        signature=key.sign(VOTE_DOMAIN, canonical_bytes("VoteBody", body)),
    )


def decode_vote(raw: bytes) -> Vote:
    """Decode a ``BlockVote`` message (signature not checked); DecodeError if not one."""
    try:
        _, record = decode(raw, "BlockVote")
        return Vote.from_record(record)
    except (CodecError, InvalidEvent) as exc:
        raise DecodeError(str(exc)) from exc
