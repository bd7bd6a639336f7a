"""Transactions: envelope, tx id, sender, nonce, signature and size limits.

Theory of operation
-------------------
* A ``TxEnvelope`` holds a ``TxBody`` (chain id, sender key id, per-sender nonce, one
  operation from the payload union), the sender's raw public key and an Ed25519 signature.
* ``tx_id`` = SHA-256 of the canonical bytes of the body. The signature is over
  ``TX_DOMAIN || canonical body`` by the key whose SHA-256 is ``sender``.
* :func:`parse_tx` turns wire bytes into a :class:`Transaction` or raises :class:`TxRejected`
  carrying the result code (``TOO_LARGE``, ``MALFORMED``, ``BAD_SIGNATURE``); state-dependent
  checks (sender known and active, nonce, permissions) belong to :mod:`ledger.execution`.
* An entry that does not even decode is identified by the SHA-256 of its raw bytes.
* The Ed25519 verify is nearly all of :func:`parse_tx`'s cost. A caller that has already
  verified an envelope's signature (the audit, in worker processes, with
  :func:`signature_verifies`) passes ``signature_verified=True`` to skip that one call; every
  other check still runs, so the outcome is the normal one for any envelope whose signature
  :func:`signature_verifies` accepts. The flag is trusted, not checked: a caller that vouches
  for a bad signature gets the envelope accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.errors import InvalidEvent, LedgerError
from ledger.hashing import canonical_bytes, sha256
from ledger.keys import (
    KEY_ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    TX_DOMAIN,
    KeyPair,
    verify,
    verify_batch,
)
from ledger.results import ResultCode
from schemas.codec import HEADER_BYTES, MAGIC, decode, encode, registry
from schemas.errors import CodecError

OPERATIONS = (
    "ProposeMember",
    "ProposeRemoval",
    "CastVote",
    "AddOperator",
    "RemoveOperator",
    "RegisterIdentity",
    "RevokeIdentity",
    "RotateKey",
    "AnchorData",
    "CommitBatch",
    "RegisterAsset",
    "TransferAsset",
    "ReportEquivocation",
)
DEFAULT_MAX_TX_BYTES = 64 * 1024


class TxRejected(LedgerError):
    """A transaction refused before it reaches the state; ``code`` says why."""

    def __init__(self, code: ResultCode, detail: str = "", *, tx_id: bytes | None = None) -> None:
        super().__init__(f"{code.name}: {detail}" if detail else code.name)
        self.code = code
        self.tx_id = tx_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    """A decoded, well-formed transaction (signature checked by :func:`parse_tx`)."""

    chain_id: str
    sender: bytes
    nonce: int
    operation: str
    args: Mapping[str, Any]
    public_key: bytes
    signature: bytes
    tx_id: bytes
    size: int

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise InvalidEvent(f"unknown operation {self.operation!r}")
        if len(self.sender) != KEY_ID_BYTES or self.nonce < 0:
            raise InvalidEvent("sender must be a 32-byte key id and nonce non-negative")


def body_record(
    chain_id: str, sender: bytes, nonce: int, operation: str, args: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``TxBody`` record of an operation (``operation`` is a short name from OPERATIONS)."""
    if operation not in OPERATIONS:
        raise InvalidEvent(f"unknown operation {operation!r}")
    return {
        "chain_id": chain_id,
        "sender": sender,
        "nonce": nonce,
        "payload": (f"pantheon.{operation}", dict(args)),
    }


def sign_tx(
    key: KeyPair, *, chain_id: str, nonce: int, operation: str, args: Mapping[str, Any]
) -> bytes:
    """Build, sign and encode a ``TxEnvelope`` (single-object bytes for ``pantheon.tx``)."""
    body = body_record(chain_id, key.key_id, nonce, operation, args)
    signature = key.sign(TX_DOMAIN, canonical_bytes("TxBody", body))
    return encode(
        "TxEnvelope", {"body": body, "public_key": key.public_key, "signature": signature}
    )


def entry_id(raw: bytes) -> bytes:
    """Identifier of a block entry that is not a decodable transaction."""
    return sha256(raw)


# An envelope ends with its public key and signature, each as Avro bytes: a one- or two-byte
# length (32 -> 0x40, 64 -> 0x80 0x01) and the bytes. Everything between the single-object
# header and that tail is the TxBody exactly as encoded.
_ENVELOPE_TAIL = 1 + PUBLIC_KEY_BYTES + 2 + SIGNATURE_BYTES
_ENVELOPE_HEADER = MAGIC + registry().by_name("TxEnvelope").fingerprint_bytes


def _has_envelope_tail(raw: bytes) -> bool:
    """Whether ``raw`` ends like an envelope: a 32-byte key then a 64-byte signature."""
    start = len(raw) - _ENVELOPE_TAIL
    return (
        start >= HEADER_BYTES
        and raw[start] == 0x40
        and raw[start + 1 + PUBLIC_KEY_BYTES : start + 3 + PUBLIC_KEY_BYTES] == b"\x80\x01"
    )


def _body_bytes(raw: bytes, body: Mapping[str, Any]) -> bytes:
    """The canonical bytes of the envelope's body, sliced from the wire bytes.

    The codec accepts only minimal varints and inputs it consumes exactly, and Avro's binary
    encoding of a value is then unique, so the slice *is* the canonical encoding; it saves
    re-encoding every transaction. The tail's shape is checked, and anything unexpected falls
    back to re-encoding.
    """
    if _has_envelope_tail(raw):
        return raw[HEADER_BYTES : len(raw) - _ENVELOPE_TAIL]
    return canonical_bytes("TxBody", body)  # pragma: no cover - unreachable for valid input


def signature_verifies(raw: bytes) -> bool:
    """Whether the Ed25519 check of :func:`parse_tx` would pass for ``raw``, without decoding.

    The key, signature and signed body are sliced from the wire bytes (only for the current
    ``TxEnvelope`` schema). For every envelope on which :func:`parse_tx` reaches its signature
    check (it decoded, with a 32-byte key and a 64-byte signature), the unique encoding of
    ``{body, public_key, signature}`` makes these slices exactly the values it checks,
    so the two agree; for any other input the answer does not matter (``parse_tx`` rejects it
    first) and is usually False. Cheap enough to run in bulk in worker processes.
    """
    item = signature_item(raw)
    return item is not None and verify(*item[:2], TX_DOMAIN, item[2])


def signature_item(raw: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(public key, signature, signed body)`` sliced from an envelope's wire bytes (the
    message signed is ``TX_DOMAIN`` and the body), or None if ``raw`` is not shaped like one:
    what :func:`signature_verifies` checks."""
    if not raw.startswith(_ENVELOPE_HEADER) or not _has_envelope_tail(raw):
        return None
    end = len(raw)
    key_at = end - _ENVELOPE_TAIL + 1
    return (
        raw[key_at : key_at + PUBLIC_KEY_BYTES],
        raw[end - SIGNATURE_BYTES :],
        raw[HEADER_BYTES : end - _ENVELOPE_TAIL],
    )


def signatures_verify(raws: Sequence[bytes]) -> list[bool]:
    """:func:`signature_verifies` of each of ``raws``, in order, checked as one batch
    (:func:`ledger.keys.verify_batch`: the same answers, several times faster with the
    compiled extension)."""
    items = [signature_item(raw) for raw in raws]
    shaped = [item for item in items if item is not None]
    answers = iter(verify_batch(shaped, domain=TX_DOMAIN))
    return [item is not None and next(answers) for item in items]


def parse_tx(
    raw: bytes, *, max_tx_bytes: int = DEFAULT_MAX_TX_BYTES, signature_verified: bool = False
) -> Transaction:
    """Decode and authenticate an envelope; raises :class:`TxRejected` with a result code.

    ``signature_verified=True`` skips only the Ed25519 verify: the caller vouches that
    :func:`signature_verifies` holds for ``raw`` (it is not checked again).
    """
    if len(raw) > max_tx_bytes:
        raise TxRejected(ResultCode.TOO_LARGE, f"{len(raw)} > {max_tx_bytes} bytes")
    try:
        _, env = decode(raw, "TxEnvelope", max_bytes=max_tx_bytes)
    except CodecError as exc:
        raise TxRejected(ResultCode.MALFORMED, str(exc)) from exc
    body = env["body"]
    operation, args = body["payload"]
    public_key, signature = env["public_key"], env["signature"]
    if (
        len(public_key) != PUBLIC_KEY_BYTES
        or len(signature) != SIGNATURE_BYTES
        or len(body["sender"]) != KEY_ID_BYTES
        or body["nonce"] < 0
    ):
        raise TxRejected(ResultCode.MALFORMED, "bad key, signature, sender or nonce")
    canonical_body = _body_bytes(raw, body)
    tx_id = sha256(canonical_body)
    if sha256(public_key) != body["sender"]:
        raise TxRejected(
            ResultCode.BAD_SIGNATURE, "sender is not the key id of public_key", tx_id=tx_id
        )
    if not signature_verified and not verify(public_key, signature, TX_DOMAIN, canonical_body):
        raise TxRejected(ResultCode.BAD_SIGNATURE, "signature does not verify", tx_id=tx_id)
    return Transaction(
        chain_id=body["chain_id"],
        sender=body["sender"],
        nonce=body["nonce"],
        operation=operation.removeprefix("pantheon."),
        args=args,
        public_key=public_key,
        signature=signature,
        tx_id=tx_id,
        size=len(raw),
    )
