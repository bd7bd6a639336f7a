"""Finality: quorums of institutions, deterministic certificates, equivocation, divergence.

Theory of operation
-------------------
* The tracker is fed votes in ``pantheon.votes`` order and, per height, the validator set of
  that height (members after ``h-1``). Votes for a height whose set is not known yet are
  buffered in order and replayed when it arrives, so every validator sees the same sequence.
* A vote counts if its signature is valid, its operator belongs to a member institution of
  that height, and it is that operator's first vote at that height. An institution counts once
  per hash however many operators it runs. Height ``h`` is final when one hash has votes from
  ``q = floor(2n/3) + 1`` distinct institutions; the certificate is the first such ``q`` votes
  (one per institution, in log order), so every validator derives the same certificate.
* A second valid vote of one operator for a different hash at the same height is
  :class:`Equivocation` evidence (reported once per operator and height), never counted.
* Once both the final hash and the validator's own hash of ``h`` are known and differ, a
  :class:`Divergence` is reported: the validator must stop signing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.blocks import BlockHeader, EntryResult, decode_finalized
from ledger.errors import DecodeError, InvalidEvent, ProofError
from ledger.members import ValidatorSet
from ledger.results import ResultCode
from ledger.votes import Vote, votes_valid


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumCertificate:
    """The first ``q`` valid votes of distinct institutions for one block hash."""

    height: int
    block_hash: bytes
    votes: tuple[Vote, ...]

    def record(self) -> dict[str, Any]:
        """The ``QuorumCertificate`` record."""
        return {
            "height": self.height,
            "block_hash": self.block_hash,
            "votes": [v.record() for v in self.votes],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> QuorumCertificate:
        """Build from a ``QuorumCertificate`` record."""
        return cls(
            height=record["height"],
            block_hash=record["block_hash"],
            votes=tuple(Vote.from_record(v) for v in record["votes"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Finalized:
    """Height ``height`` is final with ``certificate``."""

    certificate: QuorumCertificate

    @property
    def height(self) -> int:
        """The final height."""
        return self.certificate.height

    @property
    def block_hash(self) -> bytes:
        """The final block hash."""
        return self.certificate.block_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class Equivocation:
    """Two valid votes of one operator for different hashes at one height."""

    first: Vote
    second: Vote

    def __post_init__(self) -> None:
        if (
            self.first.height != self.second.height
            or self.first.operator_key_id != self.second.operator_key_id
            or self.first.block_hash == self.second.block_hash
        ):
            raise InvalidEvent("equivocation needs one operator, one height, two hashes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Divergence:
    """This validator's hash of ``height`` differs from the final one."""

    height: int
    own_hash: bytes
    final_hash: bytes


Event = Finalized | Equivocation | Divergence


def verify_certificate(
    cert: QuorumCertificate, validators: ValidatorSet, block_hash: bytes
) -> None:
    """Raise :class:`ProofError` unless ``cert`` finalizes ``block_hash`` for ``validators``."""
    if cert.height != validators.height or cert.block_hash != block_hash:
        raise ProofError("certificate is for another height or hash")
    if len(cert.votes) != validators.quorum:
        raise ProofError(f"{len(cert.votes)} votes, quorum is {validators.quorum}")
    seen: set[str] = set()
    valid = votes_valid(cert.votes)  # all the signatures as one batch; same answers
    for vote, signed in zip(cert.votes, valid, strict=True):
        inst = validators.institution_of(vote.operator_key_id)
        if inst is None or inst in seen:
            raise ProofError("vote from a non-member or a second vote of one institution")
        if vote.height != cert.height or vote.block_hash != block_hash or not signed:
            raise ProofError("vote does not sign the certified block")
        seen.add(inst)


def verify_finalized(
    raw: bytes,
    validators: ValidatorSet,
    *,
    decoded: tuple[BlockHeader, dict[str, Any], tuple[EntryResult, ...]] | None = None,
) -> tuple[BlockHeader, QuorumCertificate, tuple[EntryResult, ...]]:
    """Decode a ``FinalizedBlock`` and check it: results against ``tx_root``, the validator
    set hash, and the certificate against the header hash. Raises :class:`ProofError` or
    :class:`DecodeError`. ``decoded``: what :func:`~ledger.blocks.decode_finalized` returned
    for these very bytes, when the caller has it already (it is not decoded again)."""
    header, cert_record, results = decode_finalized(raw) if decoded is None else decoded
    try:
        cert = QuorumCertificate.from_record(cert_record)
    except (InvalidEvent, KeyError) as exc:
        raise DecodeError(str(exc)) from exc
    if header.height != validators.height or header.validator_set_hash != validators.hash():
        raise ProofError("header does not name this validator set")
    verify_certificate(cert, validators, header.hash())
    return header, cert, results


_BEFORE_SIGNATURE = frozenset(
    {ResultCode.TOO_LARGE, ResultCode.MALFORMED, ResultCode.BAD_SIGNATURE}
)
"""Result codes given before (or by) the signature check: every other code means the
executing validator found the envelope's signature valid (ledger.execution's check order)."""


def certified_signatures(raws: Sequence[bytes], results: Sequence[EntryResult]) -> frozenset[bytes]:
    """The envelopes of a certified block whose signatures its quorum verified.

    ``raws`` are the entries of the cut block, ``results`` the certified results (checked
    against the certified ``tx_root`` by :func:`verify_finalized`). An entry whose certified
    code came after the signature check had its signature verified by every signer of the
    certificate, at least ``f + 1`` of them honest. A reader that re-executes the block can
    vouch for those signatures (``LedgerMachine.execute(verified_signatures=...)``) and still
    compares its header hash with the certified one. Mismatched lengths vouch for nothing.
    """
    if len(raws) != len(results):
        return frozenset()
    return frozenset(
        raw
        for raw, result in zip(raws, results, strict=True)
        if result.code not in _BEFORE_SIGNATURE
    )


@dataclass(slots=True)
class _Height:
    validators: ValidatorSet | None = None
    buffered: list[Vote] = field(default_factory=list)
    first_vote: dict[bytes, Vote] = field(default_factory=dict)
    reported: set[bytes] = field(default_factory=set)
    supporters: dict[bytes, list[Vote]] = field(default_factory=dict)
    final: Finalized | None = None
    own_hash: bytes | None = None
    diverged: bool = False


class FinalityTracker:
    """Derives final blocks and evidence from the ordered vote log (pure, in memory)."""

    def __init__(self) -> None:
        self._heights: dict[int, _Height] = {}

    def _at(self, height: int) -> _Height:
        return self._heights.setdefault(height, _Height())

    def set_validators(self, validators: ValidatorSet) -> list[Event]:
        """Provide the validator set of its height; replays buffered votes."""
        slot = self._at(validators.height)
        if slot.validators is not None:
            if slot.validators.hash() != validators.hash():
                raise InvalidEvent(f"another validator set for height {validators.height}")
            return []
        slot.validators = validators
        events: list[Event] = []
        buffered, slot.buffered = slot.buffered, []
        for vote in buffered:
            events.extend(self._count(slot, vote))
        return events

    def add_vote(self, vote: Vote) -> list[Event]:
        """Consume the next vote of the log."""
        slot = self._at(vote.height)
        if slot.validators is None:
            slot.buffered.append(vote)
            return []
        return self._count(slot, vote)

    def set_own_hash(self, height: int, block_hash: bytes) -> list[Event]:
        """Record this validator's own hash of ``height``."""
        slot = self._at(height)
        slot.own_hash = block_hash
        return self._divergence(height, slot)

    def final(self, height: int) -> Finalized | None:
        """The finality of ``height``, if reached."""
        slot = self._heights.get(height)
        return slot.final if slot else None

    def first_votes(self, height: int) -> dict[bytes, Vote]:
        """The first valid vote of each operator counted at ``height`` (for evidence)."""
        slot = self._heights.get(height)
        return dict(slot.first_vote) if slot else {}

    def forget_below(self, height: int) -> None:
        """Drop bookkeeping of heights below ``height`` (no more evidence for them)."""
        for h in [h for h in self._heights if h < height]:
            del self._heights[h]

    def _count(self, slot: _Height, vote: Vote) -> list[Event]:
        validators = slot.validators
        assert validators is not None
        inst = validators.institution_of(vote.operator_key_id)
        if inst is None or not vote.is_valid():
            return []
        first = slot.first_vote.setdefault(vote.operator_key_id, vote)
        if first.block_hash != vote.block_hash:
            if vote.operator_key_id in slot.reported:
                return []
            slot.reported.add(vote.operator_key_id)
            return [Equivocation(first=first, second=vote)]
        if first is not vote or slot.final is not None:
            return []
        support = slot.supporters.setdefault(vote.block_hash, [])
        if any(validators.institution_of(v.operator_key_id) == inst for v in support):
            return []
        support.append(vote)
        if len(support) < validators.quorum:
            return []
        slot.final = Finalized(
            certificate=QuorumCertificate(
                height=vote.height, block_hash=vote.block_hash, votes=tuple(support)
            )
        )
        return [slot.final, *self._divergence(vote.height, slot)]

    @staticmethod
    def _divergence(height: int, slot: _Height) -> list[Event]:
        if (
            slot.final is None
            or slot.own_hash is None
            or slot.diverged
            or slot.own_hash == slot.final.block_hash
        ):
            return []
        slot.diverged = True
        return [Divergence(height=height, own_hash=slot.own_hash, final_hash=slot.final.block_hash)]


def certify(votes: Sequence[Vote], validators: ValidatorSet) -> Finalized | None:
    """Finality of one height from a finite vote sequence (convenience for audit and tests)."""
    tracker = FinalityTracker()
    tracker.set_validators(validators)
    for vote in votes:
        for event in tracker.add_vote(vote):
            if isinstance(event, Finalized):
                return event
    return None
