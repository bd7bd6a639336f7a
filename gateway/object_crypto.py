"""Stored objects at rest: chunks sealed under the owner's data key, rows authenticated (D23).

Theory of operation
-------------------
* Every chunk of an object is sealed with AES-GCM under its **owner's data key** (the same
  per-user key as the owner's personal fields, :mod:`gateway.auth.crypto`):
  ``01 || nonce(12) || AES-GCM(key, chunk)`` with associated data binding it to the
  institution, owner, data key id, data id, upload id and chunk number, so a chunk moved to
  another position, object, upload or owner does not open. Destroying the owner's data key
  (``IamService.forget_user``) makes every chunk noise: the object is shredded.
* The gateway keeps, per stored chunk, the SHA-256 of its sealed bytes; the **chunk root** is
  SHA-256 over those digests in order. It is committed in the ``ObjectStored`` event and in
  the metadata row, so the audit can check stored chunks without any key, and the gateway
  rejects a tampered chunk before decrypting or sending it.
* Metadata and grant rows carry a **MAC** (HMAC-SHA256 under a key derived with HKDF from the
  owner's data key) over every field the gateway acts on. A row written by someone without
  the owner's data key (a database or broker attacker) does not verify and is not acted on.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.auth.crypto import CryptoError, DataKey
from projections.objects import chunk_root

NONCE_BYTES = 12
TAG_BYTES = 16
VERSION = b"\x01"
SEAL_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES


def _encode(*parts: str | bytes | int | bool) -> bytes:
    """Length-prefixed concatenation: no two field lists encode alike."""
    out = bytearray()
    for part in parts:
        if isinstance(part, bool):
            raw = b"\x01" if part else b"\x00"
        elif isinstance(part, int):
            raw = str(part).encode("ascii")
        elif isinstance(part, str):
            raw = part.encode("utf-8")
        else:
            raw = bytes(part)
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def new_upload_id() -> str:
    """A random id for one upload's chunks."""
    return f"up-{secrets.token_hex(12)}"


def chunk_aad(  # noqa: PLR0917 (the binding, in order)
    institution: str, owner: str, key_id: str, data_id: str, upload_id: str, seq: int
) -> bytes:
    return _encode("pantheon-object-chunk", institution, owner, key_id, data_id, upload_id, seq)


def seal_chunk(dk: DataKey, aad: bytes, plaintext: bytes) -> bytes:
    """One chunk sealed under the owner's data key (see the module docstring)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return VERSION + nonce + AESGCM(dk.key).encrypt(nonce, plaintext, aad)


def open_chunk(dk: DataKey, aad: bytes, sealed: bytes) -> bytes:
    """Inverse of :func:`seal_chunk`; :class:`CryptoError` if it does not open."""
    if len(sealed) < SEAL_OVERHEAD or sealed[:1] != VERSION:
        raise CryptoError("not a sealed chunk")
    try:
        return AESGCM(dk.key).decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)
    except InvalidTag:
        raise CryptoError("chunk does not open (wrong key, binding or tampered)") from None


def chunk_digest(stored: bytes) -> bytes:
    """SHA-256 of a chunk as stored (sealed)."""
    return hashlib.sha256(stored).digest()


def _mac_key(dk: DataKey) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"pantheon-object-rows"
    ).derive(dk.key)


def object_mac(
    dk: DataKey,
    institution: str,
    *,
    data_id: str,
    owner: str,
    sha256: bytes,
    size: int,
    content_type: str,
    metadata: str,
    upload_id: str,
    chunk_count: int,
    chunk_root: bytes,
) -> bytes:
    """The MAC of an object's metadata row (binds the key id through ``dk``)."""
    message = _encode(
        "object",
        institution,
        dk.key_id,
        data_id,
        owner,
        sha256,
        size,
        content_type,
        metadata,
        upload_id,
        chunk_count,
        chunk_root,
    )
    return hmac.new(_mac_key(dk), message, hashlib.sha256).digest()


def grant_mac(
    dk: DataKey, institution: str, *, data_id: str, upload_id: str, subject: str, granted: bool
) -> bytes:
    """The MAC of one grant of an object (who may read it)."""
    message = _encode("grant", institution, dk.key_id, data_id, upload_id, subject, granted)
    return hmac.new(_mac_key(dk), message, hashlib.sha256).digest()


__all__ = [
    "chunk_aad",
    "chunk_digest",
    "chunk_root",
    "grant_mac",
    "mac_ok",
    "new_upload_id",
    "object_mac",
    "open_chunk",
    "seal_chunk",
]


def mac_ok(expected: bytes, got: bytes) -> bool:
    return hmac.compare_digest(expected, got)
