"""Hashing: SHA-256 over canonical bytes.

Theory of operation: a hash in Pantheon is always SHA-256 of the canonical bytes (the Avro
binary body, see :mod:`schemas.codec`) of a record, so every implementation that can encode
Avro computes the same hashes. Signatures are likewise over canonical bytes, prefixed by a
domain tag so that a signature for one purpose can never be replayed for another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ledger.errors import DecodeError
from schemas.codec import canonical
from schemas.errors import CodecError

HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def canonical_bytes(schema_name: str, record: Mapping[str, Any]) -> bytes:
    """Canonical bytes of ``record``; a record that does not fit its schema is a DecodeError."""
    try:
        return canonical(schema_name, record)
    except CodecError as exc:
        raise DecodeError(str(exc)) from exc


def hash_record(schema_name: str, record: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical bytes of ``record``."""
    return sha256(canonical_bytes(schema_name, record))
