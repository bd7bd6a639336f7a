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
"""

from __future__ import annotations

from collections.abc import Mapping
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
)
from ledger.results import ResultCode
from schemas.codec import HEADER_BYTES, decode, encode
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


def _body_bytes(raw: bytes, body: Mapping[str, Any]) -> bytes:
    """The canonical bytes of the envelope's body, sliced from the wire bytes.

    The codec accepts only minimal varints and inputs it consumes exactly, and Avro's binary
    encoding of a value is then unique, so the slice *is* the canonical encoding; it saves
    re-encoding every transaction. The tail's shape is checked, and anything unexpected falls
    back to re-encoding.
    """
    tail = raw[len(raw) - _ENVELOPE_TAIL :]
    if tail[0] == 0x40 and tail[1 + PUBLIC_KEY_BYTES : 3 + PUBLIC_KEY_BYTES] == b"\x80\x01":
        return raw[HEADER_BYTES : len(raw) - _ENVELOPE_TAIL]
    return canonical_bytes("TxBody", body)  # pragma: no cover - unreachable for valid input


def parse_tx(raw: bytes, *, max_tx_bytes: int = DEFAULT_MAX_TX_BYTES) -> Transaction:
    """Decode and authenticate an envelope; raises :class:`TxRejected` with a result code."""
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
    if not verify(public_key, signature, TX_DOMAIN, canonical_body):
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
