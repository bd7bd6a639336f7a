"""What a system contract knows about the transaction it runs for, and argument checks.

A contract gets a :class:`TxContext` (height, tx id, the sender's key record and chain
parameters) and an overlay to read and write; it returns a result code and writes nothing
when it rejects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.ed25519_zip215 import is_strong_public_key
from ledger.keys import PUBLIC_KEY_BYTES
from ledger.state import Record

MAX_ID_CHARS = 128
MAX_LABEL_CHARS = 256
MAX_METADATA_BYTES = 4096
MAX_OPERATORS = 16
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TxContext:
    """The transaction a contract executes for."""

    height: int
    tx_id: bytes
    sender: Record
    params: Record

    @property
    def sender_id(self) -> bytes:
        """The sender's key id."""
        return bytes(self.sender["key_id"])

    @property
    def institution(self) -> str:
        """The sender's institution."""
        return str(self.sender["institution_id"])

    @property
    def role(self) -> str:
        """The sender's role (``KeyRole`` symbol)."""
        return str(self.sender["role"])


def is_slug(value: str) -> bool:
    """Institution ids: lowercase letters, digits and dashes, 1 to 63 characters."""
    return _SLUG.fullmatch(value) is not None


def is_id(value: str) -> bool:
    """Data, batch and asset ids: 1 to ``MAX_ID_CHARS`` characters, no control characters."""
    return 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def is_public_key(value: bytes) -> bool:
    """A registrable Ed25519 public key: 32 bytes, canonical, not of small order (D34)."""
    return len(value) == PUBLIC_KEY_BYTES and is_strong_public_key(value)


def fits_metadata(value: str) -> bool:
    """Metadata strings are at most ``MAX_METADATA_BYTES`` of UTF-8."""
    return len(value.encode("utf-8")) <= MAX_METADATA_BYTES
