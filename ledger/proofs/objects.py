"""Proofs of anchored off-chain objects (the data access proxy) and their verification (pure).

An :class:`ObjectProof` is its anchor part (the object's hash, size and content type, the
``AnchorData`` tx id and the declared block hash) plus one
:class:`~ledger.proofs.inclusion.TxInclusion`. It carries what a client needs to check a
downloaded object with nothing but the genesis: the object's SHA-256 is the one an
``AnchorData`` transaction of this chain commits for ``data_id`` (its envelope, signature
included), that transaction is entry ``tx_index`` of the block's ``tx_root`` with result
``OK``, the header hashes to the declared block hash, and a quorum of the block's validator set
certifies that hash. The same limitation on membership history as for record proofs applies
(``validators`` overrides the genesis members).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ledger.errors import InvalidEvent, ProofError
from ledger.genesis import Genesis
from ledger.hashing import sha256
from ledger.members import ValidatorSet
from ledger.proofs.inclusion import TxInclusion, json_int, json_str
from ledger.tx import TxRejected, parse_tx
from schemas.errors import CodecError

OBJECT_PROOF_VERSION = 1
OBJECT_PROOF_KIND = "pantheon.object-proof"


class ProofLink(StrEnum):
    """The link of an object proof that failed, named in :class:`ObjectProofError`."""

    FORMAT = "proof format"
    CHAIN = "chain id"
    OBJECT_HASH = "object hash vs anchored hash"
    ANCHOR_TX = "anchor transaction"
    HEADER_HASH = "header hash mismatch"
    TX_INCLUSION = "anchor tx not in block (tx_root)"
    CERTIFICATE = "block certificate invalid"


class ObjectProofError(ProofError):
    """An object proof does not verify; :attr:`link` says which link failed (also the message's
    prefix)."""

    def __init__(self, link: ProofLink, detail: str) -> None:
        super().__init__(f"{link.value}: {detail}")
        self.link = link
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectProof:
    """An off-chain object's anchor and the path from it to a final block."""

    chain_id: str
    data_id: str
    sha256: bytes
    size: int
    content_type: str
    tx_id: bytes
    block_hash: bytes
    inclusion: TxInclusion
    """The transaction-inclusion part (the ``AnchorData`` in a certified block)."""

    @property
    def height(self) -> int:
        return self.inclusion.header.height

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (bytes as hex)."""
        return {
            "version": OBJECT_PROOF_VERSION,
            "kind": OBJECT_PROOF_KIND,
            "chain_id": self.chain_id,
            "data_id": self.data_id,
            "sha256": self.sha256.hex(),
            "size": self.size,
            "content_type": self.content_type,
            "anchor": {
                "tx_id": self.tx_id.hex(),
                "height": self.height,
                "block_hash": self.block_hash.hex(),
            },
            "transaction": self.inclusion.transaction_json(),
            "block": self.inclusion.block_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ObjectProof:
        """Parse :meth:`to_json` output; :class:`ObjectProofError` (``FORMAT``) otherwise."""
        try:
            if doc.get("kind") != OBJECT_PROOF_KIND or doc["version"] != OBJECT_PROOF_VERSION:
                raise ValueError(f"not a version {OBJECT_PROOF_VERSION} {OBJECT_PROOF_KIND}")
            a = doc["anchor"]
            part = TxInclusion.from_json(doc["transaction"], doc["block"])
            declared = bytes.fromhex(doc["block"]["hash"])
            if (
                json_int(a["height"]) != part.header.height
                or bytes.fromhex(a["block_hash"]) != declared
            ):
                raise ValueError("the anchor names another block than the proof's block")
            return cls(
                chain_id=json_str(doc["chain_id"]),
                data_id=json_str(doc["data_id"]),
                sha256=bytes.fromhex(doc["sha256"]),
                size=json_int(doc["size"]),
                content_type=json_str(doc["content_type"]),
                tx_id=bytes.fromhex(a["tx_id"]),
                block_hash=declared,
                inclusion=part,
            )
        except (
            KeyError,
            TypeError,
            ValueError,
            OverflowError,
            AttributeError,
            InvalidEvent,
        ) as exc:
            # OverflowError: int() of a JSON Infinity or 1e400, as in RecordProof.from_json
            raise ObjectProofError(ProofLink.FORMAT, f"not an object proof: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedObject:
    """What a valid object proof establishes."""

    data_id: str
    sha256: bytes
    size: int
    tx_id: bytes
    anchored_by: bytes
    height: int
    block_hash: bytes


def verify_object_proof(
    proof: ObjectProof,
    genesis: Genesis,
    data: bytes | None = None,
    validators: ValidatorSet | None = None,
) -> VerifiedObject:
    """Check every link of ``proof`` (and, if given, that ``data`` is the anchored object);
    raise :class:`ObjectProofError` naming the first link that fails.

    ``validators`` overrides the validator set of the block's height (default: the genesis
    members restated for that height)."""
    if proof.chain_id != genesis.params.chain_id:
        raise ObjectProofError(ProofLink.CHAIN, "the proof is for another chain")
    if data is not None:
        digest = sha256(data)
        if digest != proof.sha256:
            raise ObjectProofError(
                ProofLink.OBJECT_HASH,
                f"the object ({len(data)} bytes) hashes to {digest.hex()}, "
                f"the anchored hash is {proof.sha256.hex()}",
            )
        if len(data) != proof.size:
            raise ObjectProofError(
                ProofLink.OBJECT_HASH, f"the object has {len(data)} bytes, not {proof.size}"
            )
    try:
        tx = parse_tx(proof.inclusion.envelope)
    except TxRejected as exc:
        raise ObjectProofError(
            ProofLink.ANCHOR_TX, f"the AnchorData envelope does not authenticate: {exc}"
        ) from exc
    args = tx.args
    if tx.chain_id != genesis.params.chain_id or tx.operation != "AnchorData":
        raise ObjectProofError(
            ProofLink.ANCHOR_TX, "the transaction is not an AnchorData of this chain"
        )
    if args["data_id"] != proof.data_id:
        raise ObjectProofError(
            ProofLink.ANCHOR_TX,
            f"the transaction anchors {args['data_id']!r}, not {proof.data_id!r}",
        )
    if args["sha256"] != proof.sha256:
        raise ObjectProofError(
            ProofLink.OBJECT_HASH,
            f"the anchored hash {bytes(args['sha256']).hex()} differs from the proof's sha256 "
            f"{proof.sha256.hex()}",
        )
    if tx.tx_id != proof.tx_id:
        raise ObjectProofError(
            ProofLink.ANCHOR_TX, "the envelope's tx id is not the anchor's tx id"
        )
    part = proof.inclusion
    header = part.header
    computed = header.hash()
    if computed != proof.block_hash:
        raise ObjectProofError(
            ProofLink.HEADER_HASH,
            f"block {header.height}'s header hashes to {computed.hex()}, "
            f"the proof declares {proof.block_hash.hex()}",
        )
    try:
        part.check_in_block(tx.tx_id)
    except ProofError as exc:
        raise ObjectProofError(
            ProofLink.TX_INCLUSION,
            f"the accepted AnchorData is not entry {part.tx_index} of block {header.height}: {exc}",
        ) from exc
    try:
        part.check_certified(genesis, validators)
    except (CodecError, InvalidEvent, KeyError, ProofError) as exc:
        raise ObjectProofError(ProofLink.CERTIFICATE, str(exc)) from exc
    return VerifiedObject(
        data_id=proof.data_id,
        sha256=proof.sha256,
        size=proof.size,
        tx_id=tx.tx_id,
        anchored_by=tx.sender,
        height=header.height,
        block_hash=computed,
    )
