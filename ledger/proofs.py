"""Layer-2 inclusion proofs and their offline verification (pure).

Theory of operation
-------------------
A :class:`RecordProof` carries everything needed to check, with nothing but the genesis, that
a device reading is anchored in a final block:

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from typing import Any

from ledger.blocks import BlockHeader, EntryResult, tx_proof, verify_tx_proof
from ledger.devices import DeviceRecord
from ledger.errors import InvalidEvent, ProofError
from ledger.finality import QuorumCertificate, verify_certificate
from ledger.genesis import Genesis, genesis_state
from ledger.hashing import sha256
from ledger.l2 import BUNDLE_KIND, RECORD_KIND, DeviceBundle
from ledger.members import ValidatorSet, validator_set
from ledger.merkle import MerkleError, verify_inclusion
from ledger.results import ResultCode
from ledger.tx import TxRejected, parse_tx
from schemas.codec import decode_canonical
from schemas.errors import CodecError

PROOF_VERSION = 1


def _int(value: Any) -> int:
    """A JSON integer, strictly: not a string, a float or a boolean (proof files must be as
    written by ``to_json``; every checked value is recomputed anyway)."""
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: Any) -> str:
    """A JSON string, strictly."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _header(block: Mapping[str, Any]) -> BlockHeader:
    """The header of a ``block`` section (its ``hash`` and ``certificate`` are read apart)."""
    x = bytes.fromhex
    return BlockHeader(
        height=_int(block["height"]),
        prev_hash=x(block["prev_hash"]),
        first_offset=_int(block["first_offset"]),
        last_offset=_int(block["last_offset"]),
        tx_root=x(block["tx_root"]),
        state_root=x(block["state_root"]),
        validator_set_hash=x(block["validator_set_hash"]),
        timestamp_ms=_int(block["timestamp_ms"]),
    )


def header_json(header: BlockHeader, certificate: bytes) -> dict[str, Any]:
    """The ``block`` section of a proof document (bytes as hex)."""
    return {
        "height": header.height,
        "hash": header.hash().hex(),
        "prev_hash": header.prev_hash.hex(),
        "first_offset": header.first_offset,
        "last_offset": header.last_offset,
        "tx_root": header.tx_root.hex(),
        "state_root": header.state_root.hex(),
        "validator_set_hash": header.validator_set_hash.hex(),
        "timestamp_ms": header.timestamp_ms,
        "certificate": certificate.hex(),
    }


# -- the shared part: a transaction's inclusion in a certified block ------------------------------
#
# Every proof kind is its own leaf part (what the transaction commits: a batch root, an object
# hash) plus this part: the signed envelope, its audit path in the block's ``tx_root``, the block
# header and its quorum certificate (the transparency-dev/merkle habit: recompute, then match).


@dataclass(frozen=True, slots=True, kw_only=True)
class TxInclusion:
    """A transaction envelope, its entry in a block's ``tx_root`` and the certified header."""

    envelope: bytes
    tx_offset: int
    tx_index: int
    tx_count: int
    tx_path: tuple[bytes, ...]
    header: BlockHeader
    certificate: bytes

    @classmethod
    def assemble(
        cls,
        entries: Sequence[EntryResult],
        position: int,
        *,
        offset: int,
        envelope: bytes,
        header: BlockHeader,
        certificate: bytes,
    ) -> TxInclusion:
        """The part for entry ``position`` of a block's ``entries`` (the provers' one assembler)."""
        return cls(
            envelope=envelope,
            tx_offset=offset,
            tx_index=position,
            tx_count=len(entries),
            tx_path=tuple(tx_proof(entries, position)),
            header=header,
            certificate=certificate,
        )

    @classmethod
    def of(cls, proof: object) -> TxInclusion:
        """The part held (as flat fields of the same names) by a proof kind."""
        return cls(**{name: getattr(proof, name) for name in _PART_FIELDS})

    def fields(self) -> dict[str, Any]:
        """The part as keyword arguments of a proof kind's constructor (shallow, by name)."""
        return {name: getattr(self, name) for name in _PART_FIELDS}

    def transaction_json(self) -> dict[str, Any]:
        """The ``transaction`` section of a proof document."""
        return {
            "envelope": self.envelope.hex(),
            "offset": self.tx_offset,
            "index": self.tx_index,
            "count": self.tx_count,
            "path": [p.hex() for p in self.tx_path],
        }

    def block_json(self) -> dict[str, Any]:
        """The ``block`` section of a proof document."""
        return header_json(self.header, self.certificate)

    @classmethod
    def from_json(cls, transaction: Mapping[str, Any], block: Mapping[str, Any]) -> TxInclusion:
        """Parse the two sections (KeyError, TypeError, ValueError... if malformed)."""
        return cls(
            envelope=bytes.fromhex(transaction["envelope"]),
            tx_offset=_int(transaction["offset"]),
            tx_index=_int(transaction["index"]),
            tx_count=_int(transaction["count"]),
            tx_path=tuple(bytes.fromhex(p) for p in transaction["path"]),
            header=_header(block),
            certificate=bytes.fromhex(block["certificate"]),
        )

    def check_in_block(self, tx_id: bytes) -> None:
        """:class:`ProofError` unless ``tx_id``, accepted (``OK``) at ``tx_offset``, is entry
        ``tx_index`` of the header's ``tx_root``."""
        header = self.header
        if not header.first_offset <= self.tx_offset <= header.last_offset:
            raise ProofError("transaction offset outside the block")
        try:
            entry = EntryResult(tx_id=tx_id, offset=self.tx_offset, code=ResultCode.OK)
        except InvalidEvent as exc:
            raise ProofError(str(exc)) from exc
        verify_tx_proof(entry, self.tx_index, self.tx_count, self.tx_path, header)

    def check_certified(self, genesis: Genesis, validators: ValidatorSet | None = None) -> bytes:
        """The header's hash, after checking a quorum of the validator set of its height
        (``validators``, default the genesis members) certifies it; :class:`ProofError` if not."""
        header = self.header
        vs = validators if validators is not None else genesis_validators(genesis, header.height)
        if header.validator_set_hash != vs.hash():
            raise ProofError(
                f"block {header.height} names a validator set other than the genesis members: "
                "membership changed, and this verifier does not replay membership history"
            )
        try:
            cert = QuorumCertificate.from_record(
                decode_canonical("QuorumCertificate", self.certificate)
            )
        except (CodecError, InvalidEvent, KeyError) as exc:
            raise ProofError(f"certificate does not decode: {exc}") from exc
        block_hash = header.hash()
        verify_certificate(cert, vs, block_hash)
        return block_hash

    def verify(
        self, tx_id: bytes, genesis: Genesis, validators: ValidatorSet | None = None
    ) -> bytes:
        """Both checks; the certified block's hash."""
        self.check_in_block(tx_id)
        return self.check_certified(genesis, validators)


_PART_FIELDS = tuple(f.name for f in dataclass_fields(TxInclusion))


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
    envelope: bytes
    tx_offset: int
    tx_index: int
    tx_count: int
    tx_path: tuple[bytes, ...]
    header: BlockHeader
    certificate: bytes

    @property
    def inclusion(self) -> TxInclusion:
        """The transaction-inclusion part (the ``CommitBatch`` in a certified block)."""
        return TxInclusion.of(self)

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
                chain_id=_str(doc["chain_id"]),
                device_public_key=x(doc["device_public_key"]),
                kind=_str(doc["kind"]),
                leaf=x(doc["leaf"]),
                sequence=_int(doc["sequence"]),
                batch_id=_str(b["batch_id"]),
                leaf_index=_int(b["leaf_index"]),
                leaf_count=_int(b["leaf_count"]),
                audit_path=tuple(x(p) for p in b["audit_path"]),
                merkle_root=x(b["merkle_root"]),
                **part.fields(),
            )
        except (KeyError, TypeError, ValueError, OverflowError, InvalidEvent) as exc:
            # OverflowError: _int() of a JSON Infinity or 1e400 (Python's json reads floats)
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


def genesis_validators(genesis: Genesis, height: int) -> ValidatorSet:
    """The genesis members restated for ``height`` (no membership history replayed)."""
    return validator_set(genesis_state(genesis), height)


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
        tx = parse_tx(proof.envelope)
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
        height=proof.header.height,
        block_hash=block_hash,
        tx_id=tx.tx_id,
    )


# -- anchored off-chain objects (the data access proxy) -------------------------------------------
#
# An :class:`ObjectProof` carries what a client needs to check a downloaded object with nothing but
# the genesis: the object's SHA-256 is the one an ``AnchorData`` transaction of this chain commits
# for ``data_id`` (its envelope, signature included), that transaction is entry ``tx_index`` of the
# block's ``tx_root`` with result ``OK``, the header hashes to the declared block hash, and a quorum
# of the block's validator set certifies that hash. The same limitation on membership history as
# for record proofs applies (``validators`` overrides the genesis members).

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
    envelope: bytes
    tx_offset: int
    tx_index: int
    tx_count: int
    tx_path: tuple[bytes, ...]
    header: BlockHeader
    block_hash: bytes
    certificate: bytes

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def inclusion(self) -> TxInclusion:
        """The transaction-inclusion part (the ``AnchorData`` in a certified block)."""
        return TxInclusion.of(self)

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
                "height": self.header.height,
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
                _int(a["height"]) != part.header.height
                or bytes.fromhex(a["block_hash"]) != declared
            ):
                raise ValueError("the anchor names another block than the proof's block")
            return cls(
                chain_id=_str(doc["chain_id"]),
                data_id=_str(doc["data_id"]),
                sha256=bytes.fromhex(doc["sha256"]),
                size=_int(doc["size"]),
                content_type=_str(doc["content_type"]),
                tx_id=bytes.fromhex(a["tx_id"]),
                block_hash=declared,
                **part.fields(),
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
        tx = parse_tx(proof.envelope)
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
    header = proof.header
    computed = header.hash()
    if computed != proof.block_hash:
        raise ObjectProofError(
            ProofLink.HEADER_HASH,
            f"block {header.height}'s header hashes to {computed.hex()}, "
            f"the proof declares {proof.block_hash.hex()}",
        )
    part = proof.inclusion
    try:
        part.check_in_block(tx.tx_id)
    except ProofError as exc:
        raise ObjectProofError(
            ProofLink.TX_INCLUSION,
            f"the accepted AnchorData is not entry {proof.tx_index} "
            f"of block {header.height}: {exc}",
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
