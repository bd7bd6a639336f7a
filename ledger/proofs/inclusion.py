"""The part every proof kind shares: a transaction's inclusion in a certified block (pure).

Every proof kind is its own leaf part (what the transaction commits: a batch root, an object
hash) plus one :class:`TxInclusion`: the signed envelope, its audit path in the block's
``tx_root``, the block header and its quorum certificate (the transparency-dev/merkle habit:
recompute the root from the proof, then match). The part owns its assembly, its two JSON
sections (``transaction`` and ``block``) and its verification.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from ledger.blocks import BlockHeader, EntryResult, tx_proof, verify_tx_proof
from ledger.errors import InvalidEvent, ProofError
from ledger.finality import QuorumCertificate, verify_certificate
from ledger.genesis import Genesis, genesis_state
from ledger.members import ValidatorSet, validator_set
from ledger.results import ResultCode
from schemas.codec import decode_canonical
from schemas.errors import CodecError


def json_int(value: Any) -> int:
    """A JSON integer, strictly: not a string, a float or a boolean (proof files must be as
    written by ``to_json``; every checked value is recomputed anyway)."""
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def json_str(value: Any) -> str:
    """A JSON string, strictly."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _header(block: Mapping[str, Any]) -> BlockHeader:
    """The header of a ``block`` section (its ``hash`` and ``certificate`` are read apart)."""
    x = bytes.fromhex
    return BlockHeader(
        height=json_int(block["height"]),
        prev_hash=x(block["prev_hash"]),
        first_offset=json_int(block["first_offset"]),
        last_offset=json_int(block["last_offset"]),
        tx_root=x(block["tx_root"]),
        state_root=x(block["state_root"]),
        validator_set_hash=x(block["validator_set_hash"]),
        timestamp_ms=json_int(block["timestamp_ms"]),
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
            tx_offset=json_int(transaction["offset"]),
            tx_index=json_int(transaction["index"]),
            tx_count=json_int(transaction["count"]),
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


def genesis_validators(genesis: Genesis, height: int) -> ValidatorSet:
    """The genesis members restated for ``height`` (no membership history replayed)."""
    return validator_set(genesis_state(genesis), height)


INCLUSION_FIELDS = frozenset(f.name for f in dataclasses.fields(TxInclusion))
"""The names of the shared part's fields (routed by :func:`edited`)."""


class HasInclusion(Protocol):
    """A proof kind: a dataclass of its leaf part's fields and one :class:`TxInclusion`."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def inclusion(self) -> TxInclusion: ...


P = TypeVar("P", bound=HasInclusion)


def edited(proof: P, **changes: Any) -> P:
    """A copy of ``proof`` with ``changes``, the names of the inclusion part's fields
    (``tx_index``, ``header``...) applied to its part: one flat list of edits for the tamper
    tests and the fuzzers, whichever part a field lives in."""
    part = {name: changes.pop(name) for name in list(changes) if name in INCLUSION_FIELDS}
    if part:
        changes["inclusion"] = dataclasses.replace(proof.inclusion, **part)
    return dataclasses.replace(proof, **changes)


def flat_field(proof: HasInclusion, name: str) -> Any:
    """The value of field ``name`` of ``proof`` or, for an inclusion field, of its part (the
    reading counterpart of :func:`edited`)."""
    return getattr(proof.inclusion if name in INCLUSION_FIELDS else proof, name)


def flat_field_names(proof_type: type) -> tuple[str, ...]:
    """The field names of a proof kind with its inclusion part's spliced in, in order."""
    names = (f.name for f in dataclasses.fields(proof_type) if f.name != "inclusion")
    return (*names, *(f.name for f in dataclasses.fields(TxInclusion)))
