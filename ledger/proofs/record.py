"""Layer-2 record proofs and their offline verification (pure).

Theory of operation
-------------------
A :class:`RecordProof` is its batch leaf part plus one
:class:`~ledger.proofs.inclusion.TxInclusion`; it carries everything needed to check, with
nothing but the genesis, that a device reading is anchored in a final block:

1. the leaf (canonical ``DeviceRecord`` or ``DeviceBundle``) holds the reading, and the
   device's Ed25519 signature over it is valid for ``device_public_key`` (whose key id is the
   leaf's device key id);
2. the RFC 6962 audit path leads from the leaf at ``leaf_index`` to ``merkle_root`` in a tree
   of ``leaf_count`` leaves;
3. the ``CommitBatch`` envelope is well formed and signed, of this chain, and commits exactly
   that root, leaf count and batch id;
4. its tx id with result ``OK`` is entry ``tx_index`` of the block's ``tx_root`` (audit path
   ``tx_path``);
5. the block header's hash is certified by a quorum of the validator set of its height.

Limitation: the validator set of height ``h`` is derived from the genesis (its institutions and
operators, re-stated for ``h``); membership changes after genesis are not replayed, so a block
certified by a later validator set is refused with a message saying so (rather than accepted
on trust). The device key's registration on chain is not proven either (the state root has no
per-key proofs): the verifier trusts ``device_public_key`` as the key whose id the record names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.devices import DeviceRecord
from ledger.errors import InvalidEvent, ProofError
from ledger.genesis import Genesis
from ledger.l2 import BUNDLE_KIND, RECORD_KIND, DeviceBundle
from ledger.members import ValidatorSet
from ledger.merkle import MerkleError, verify_inclusion
from ledger.proofs.inclusion import TxInclusion, json_int, json_str
from ledger.tx import TxRejected, parse_tx
from schemas.codec import decode_canonical
from schemas.errors import CodecError

PROOF_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordProof:
    """A reading, its leaf and the path from it to a final block."""

    chain_id: str
    device_public_key: bytes
    kind: str
    leaf: bytes
    sequence: int
    batch_id: str
    leaf_index: int
    leaf_count: int
    audit_path: tuple[bytes, ...]
    merkle_root: bytes
    inclusion: TxInclusion
    """The transaction-inclusion part (the ``CommitBatch`` in a certified block)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (bytes as hex)."""
        part = self.inclusion
        return {
            "version": PROOF_VERSION,
            "chain_id": self.chain_id,
            "device_public_key": self.device_public_key.hex(),
            "kind": self.kind,
            "leaf": self.leaf.hex(),
            "sequence": self.sequence,
            "batch": {
                "batch_id": self.batch_id,
                "leaf_index": self.leaf_index,
                "leaf_count": self.leaf_count,
                "audit_path": [p.hex() for p in self.audit_path],
                "merkle_root": self.merkle_root.hex(),
            },
            "transaction": part.transaction_json(),
            "block": part.block_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RecordProof:
        """Parse :meth:`to_json` output; :class:`ProofError` if it is not one."""
        try:
            if doc["version"] != PROOF_VERSION:
                raise ProofError(f"unknown proof version {doc['version']!r}")
            b = doc["batch"]
            x = bytes.fromhex
            part = TxInclusion.from_json(doc["transaction"], doc["block"])
            return cls(
                chain_id=json_str(doc["chain_id"]),
                device_public_key=x(doc["device_public_key"]),
                kind=json_str(doc["kind"]),
                leaf=x(doc["leaf"]),
                sequence=json_int(doc["sequence"]),
                batch_id=json_str(b["batch_id"]),
                leaf_index=json_int(b["leaf_index"]),
                leaf_count=json_int(b["leaf_count"]),
                audit_path=tuple(x(p) for p in b["audit_path"]),
                merkle_root=x(b["merkle_root"]),
                inclusion=part,
            )
        except (KeyError, TypeError, ValueError, OverflowError, InvalidEvent) as exc:
            # OverflowError: json_int() of a JSON Infinity or 1e400 (Python's json reads floats)
            raise ProofError(f"not a record proof: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedReading:
    """What a valid proof establishes."""

    device_key_id: bytes
    sequence: int
    measured_at_ms: int
    content_type: str
    payload: bytes
    batch_id: str
    height: int
    block_hash: bytes
    tx_id: bytes


def _reading(proof: RecordProof) -> tuple[bytes, int, str, bytes]:
    """(device key id, measured_at_ms, content type, payload) after checking the signature."""
    try:
        if proof.kind == RECORD_KIND:
            rec = DeviceRecord.from_record(decode_canonical("DeviceRecord", proof.leaf))
            if not rec.verify(proof.device_public_key):
                raise ProofError("device signature does not verify")
            if rec.sequence != proof.sequence:
                raise ProofError("the leaf holds another sequence")
            return rec.device_key_id, rec.measured_at_ms, rec.content_type, rec.payload
        if proof.kind == BUNDLE_KIND:
            bundle = DeviceBundle.from_record(decode_canonical("DeviceBundle", proof.leaf))
            if not bundle.verify(proof.device_public_key):
                raise ProofError("device signature does not verify")
            index = proof.sequence - bundle.first_sequence
            if not 0 <= index < len(bundle.readings):
                raise ProofError("the bundle does not hold this sequence")
            measured, payload = bundle.readings[index]
            return bundle.device_key_id, measured, bundle.content_type, payload
    except (CodecError, InvalidEvent, KeyError, TypeError) as exc:
        raise ProofError(f"leaf does not decode: {exc}") from exc
    raise ProofError(f"unknown leaf kind {proof.kind!r}")


def verify_record_proof(
    proof: RecordProof, genesis: Genesis, validators: ValidatorSet | None = None
) -> VerifiedReading:
    """Check every link of ``proof`` (module docstring); raise :class:`ProofError` if one fails.

    ``validators`` overrides the validator set of the block's height (default: the genesis
    members, see the module's limitation).
    """
    if proof.chain_id != genesis.params.chain_id:
        raise ProofError("proof is for another chain")
    device_key_id, measured, content_type, payload = _reading(proof)
    try:
        verify_inclusion(
            proof.leaf, proof.leaf_index, proof.leaf_count, proof.audit_path, proof.merkle_root
        )
    except MerkleError as exc:
        raise ProofError(f"leaf not in batch: {type(exc).__name__}: {exc}") from exc
    try:
        tx = parse_tx(proof.inclusion.envelope)
    except TxRejected as exc:
        raise ProofError(f"CommitBatch envelope: {exc}") from exc
    args = tx.args
    if (
        tx.chain_id != genesis.params.chain_id
        or tx.operation != "CommitBatch"
        or args["batch_id"] != proof.batch_id
        or args["merkle_root"] != proof.merkle_root
        or args["leaf_count"] != proof.leaf_count
    ):
        raise ProofError("the transaction does not commit this batch root")
    block_hash = proof.inclusion.verify(tx.tx_id, genesis, validators)
    return VerifiedReading(
        device_key_id=device_key_id,
        sequence=proof.sequence,
        measured_at_ms=measured,
        content_type=content_type,
        payload=payload,
        batch_id=proof.batch_id,
        height=proof.inclusion.header.height,
        block_hash=block_hash,
        tx_id=tx.tx_id,
    )
