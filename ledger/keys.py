"""Ed25519 keys, key ids and domain-separated signatures.

Theory of operation
-------------------
* A key pair is derived from a 32-byte seed given by the caller (the core has no
  randomness; the ``pantheon keys generate`` shell draws the seed from the OS and calls
  :meth:`KeyPair.from_seed`).
* A **key id** is the full SHA-256 of the raw 32-byte Ed25519 public key (32 bytes; shown as
  64 hex characters). Senders, operators and owners are named by key id on chain.
* Every signature is over ``domain tag || canonical bytes``; the tags below keep a transaction
  signature from being valid as a vote or a device record, and vice versa.
* Verification follows the ZIP-215 rules everywhere (:mod:`ledger.signatures`, decisions
  D34); :func:`verify_batch` checks many signatures at once with the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import signatures
from ledger.errors import InvalidEvent
from ledger.hashing import sha256

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_ID_BYTES = 32

TX_DOMAIN = b"pantheon/tx/v1\x00"
VOTE_DOMAIN = b"pantheon/vote/v1\x00"
DEVICE_DOMAIN = b"pantheon/device-record/v1\x00"


def key_id(public_key: bytes) -> bytes:
    """The key id of a raw Ed25519 public key: its SHA-256."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidEvent(f"public key must be {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return sha256(public_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPair:
    """An Ed25519 key pair made from a caller-supplied seed."""

    seed: bytes = field(repr=False)
    public_key: bytes
    key_id: bytes
    _private: Ed25519PrivateKey = field(repr=False, compare=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """Derive the key pair of a 32-byte seed (deterministic)."""
        if len(seed) != SEED_BYTES:
            raise InvalidEvent(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(seed=bytes(seed), public_key=public, key_id=key_id(public), _private=private)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Ed25519 signature over ``domain || message``."""
        return self._private.sign(domain + message)

    def describe(self) -> dict[str, str]:
        """Public facts for ``pantheon keys show`` (never the seed)."""
        return {"key_id": self.key_id.hex(), "public_key": self.public_key.hex()}


def verify(public_key: bytes, signature: bytes, domain: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``domain || message`` (ZIP-215)."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    return signatures.verify(public_key, signature, domain + message)


def verify_batch(items: Sequence[tuple[bytes, bytes, bytes]], *, domain: bytes) -> list[bool]:
    """:func:`verify` of each ``(public key, signature, message)`` under one ``domain``, in
    order, checked together (one batch equation with the extension; same answers)."""
    return signatures.verify_batch(
        [(public, signature, domain + message) for public, signature, message in items]
    )
