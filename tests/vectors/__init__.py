"""Stored test vectors, and what reading the stored proof files needs."""

from __future__ import annotations

from schemas.codec import MAGIC, registry

#: the header of envelopes written before ``RotateKey.new_key_proof`` (D61): the stored proof
#: files hold such envelopes, which still decode and verify (``schemas/retired``)
V1_ENVELOPE_HEAD = (MAGIC + bytes.fromhex("fa5da07a74efbab8")).hex()


def as_written_today(stored: str) -> str:
    """A stored proof file as today's writer gives it: the same, but its envelope written
    under the current ``TxEnvelope`` schema (the same body bytes, a new fingerprint)."""
    today = (MAGIC + registry().by_name("TxEnvelope").fingerprint_bytes).hex()
    return stored.replace(V1_ENVELOPE_HEAD, today)
