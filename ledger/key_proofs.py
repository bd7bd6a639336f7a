"""Proof of possession of a key put on chain by ``RotateKey`` (decisions D61).

Theory of operation
-------------------
* A ``RotateKey`` carries ``new_key_proof``: an Ed25519 signature by the NEW key over
  :data:`ROTATE_KEY_POP_DOMAIN` followed by :func:`rotate_key_message`, the bytes
  ``u16-BE len(chain_id) || chain_id (UTF-8) || u16-BE len(key_id) || key_id ||
  new public key (32 bytes) || old public key (32 bytes)``.
* Binding the chain id stops a proof from being replayed on another chain; binding the key id
  and the old public key stops it from serving another rotation (a later rotation of the same
  key id replaces the old key, so an earlier proof no longer verifies). Without the proof a
  sender could rotate a key onto someone else's public key and, for example, take over an
  asset transfer or a vote it never signed for.
* :func:`rotate_key_proof` builds the proof (the SDK, tests and bench generators share it);
  :func:`rotate_key_proof_valid` is the contract's check, through the one ZIP-215 verifier
  (:func:`ledger.keys.verify`, D34). It never raises: anything malformed is simply not a
  proof. ``gateway/static/trust.js`` builds the same message in the explorer.
"""

from __future__ import annotations

from typing import Any

from ledger.errors import InvalidEvent
from ledger.keys import KEY_ID_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, KeyPair, verify

ROTATE_KEY_POP_DOMAIN = b"pantheon/rotate-key-pop/v1\x00"
_U16 = 1 << 16


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def rotate_key_message(
    chain_id: str, key_id: bytes, new_public_key: bytes, old_public_key: bytes
) -> bytes:
    """The bytes signed (after :data:`ROTATE_KEY_POP_DOMAIN`) by the new key of a rotation.

    Raises :class:`~ledger.errors.InvalidEvent` if a field does not fit its encoding: a chain
    id of more than 65535 bytes of UTF-8, a key id other than 32 bytes, or a public key other
    than 32 bytes.
    """
    chain = chain_id.encode("utf-8")
    if len(chain) >= _U16:
        raise InvalidEvent(f"chain id of {len(chain)} bytes does not fit a proof of possession")
    if len(key_id) != KEY_ID_BYTES:
        raise InvalidEvent(f"key id must be {KEY_ID_BYTES} bytes, got {len(key_id)}")
    if len(new_public_key) != PUBLIC_KEY_BYTES or len(old_public_key) != PUBLIC_KEY_BYTES:
        raise InvalidEvent(f"public keys must be {PUBLIC_KEY_BYTES} bytes")
    return _field(chain) + _field(bytes(key_id)) + bytes(new_public_key) + bytes(old_public_key)


def rotate_key_proof(
    new_key: KeyPair, *, chain_id: str, key_id: bytes, old_public_key: bytes
) -> bytes:
    """The ``new_key_proof`` of rotating ``key_id`` (now ``old_public_key``) to ``new_key``."""
    message = rotate_key_message(chain_id, key_id, new_key.public_key, old_public_key)
    return new_key.sign(ROTATE_KEY_POP_DOMAIN, message)


def rotate_key_args(
    new_key: KeyPair, *, chain_id: str, key_id: bytes, old_public_key: bytes
) -> dict[str, Any]:
    """The arguments of a ``RotateKey`` of ``key_id`` to ``new_key``, with its proof."""
    return {
        "key_id": bytes(key_id),
        "new_public_key": new_key.public_key,
        "new_key_proof": rotate_key_proof(
            new_key, chain_id=chain_id, key_id=key_id, old_public_key=old_public_key
        ),
    }


def rotate_key_proof_valid(
    proof: bytes,
    *,
    chain_id: str,
    key_id: bytes,
    new_public_key: bytes,
    old_public_key: bytes,
) -> bool:
    """Whether ``proof`` is the new key's signature of this rotation (ZIP-215, D34)."""
    if len(proof) != SIGNATURE_BYTES:
        return False
    try:
        message = rotate_key_message(chain_id, key_id, new_public_key, old_public_key)
    except InvalidEvent:
        return False
    return verify(new_public_key, proof, ROTATE_KEY_POP_DOMAIN, message)
