"""Verified transaction outcomes: read from quorum-certified blocks, never from a bare claim.

Theory of operation
-------------------
* A client (SDK, gateway, batcher) learns the outcome of a transaction from a
  ``FinalizedBlock`` copy on ``<prefix>blocks`` that :func:`~ledger.finality.verify_finalized`
  accepts: the results (tx ids and codes) are bound to the header by ``tx_root``, and the
  header's hash is signed by a quorum of the validator set the header names
  (``validator_set_hash``). Receipts on ``<prefix>receipts`` are not signed and are never an
  outcome (decisions D22).
* **Which validator set may certify height ``h``.** The trust anchor is the genesis: its
  members, restated for ``h``, are accepted whenever their hash is the header's
  ``validator_set_hash`` (as ``pantheon verify`` does). A validator set hash binds institution
  ids and operator key ids (never public keys: votes carry those, and their key id is their
  SHA-256), so once a set is established it verifies any later block it still names.
* **Following membership changes.** When no established set, restated for ``h``, has the
  header's hash, a *candidate* set is asked of an untrusted source (e.g. the institution's own
  chain projection). A candidate is adopted only if (1) its hash is the header's
  ``validator_set_hash``, (2) the certificate verifies against it, and (3) the certificate holds
  valid votes from more than ``n - q`` institutions of an already established set, by operator
  keys of that set (at most ``n - q`` members of a set are assumed faulty, so at least one
  honest member of the established set signed this header, and an honest validator signs only
  the header it computed, validator set hash included). This is the "skipping" rule of
  light clients; it fails safe: a block whose set cannot be established raises
  :class:`CannotVerify` and yields no outcome.
* The verifier is pure and single-threaded: the Kafka shell (:mod:`streams.receipts`) feeds it
  copies and keeps the first verifying copy of each height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.blocks import BlockHeader, EntryResult, decode_finalized
from ledger.errors import ProofError
from ledger.finality import QuorumCertificate, verify_finalized
from ledger.genesis import Genesis, genesis_state
from ledger.members import ValidatorSet, validator_set
from ledger.results import ResultCode

SetSource = Callable[[int], ValidatorSet | None]
"""Untrusted candidates: the validator set of a height as some store believes it, or None."""

MAX_ESTABLISHED = 64  # distinct member sets remembered (each change of membership adds one)


class CannotVerify(ProofError):
    """The block names a validator set this verifier cannot establish: no outcome from it."""

    def __init__(self, height: int, validator_set_hash: bytes, reason: str) -> None:
        super().__init__(
            f"block {height} names validator set {validator_set_hash.hex()[:16]}, "
            f"which cannot be established: {reason}"
        )
        self.height = height
        self.validator_set_hash = validator_set_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The certified outcome of one transaction (the fields of a ``Receipt``)."""

    tx_id: bytes
    height: int
    offset: int
    code: ResultCode
    block_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CertifiedBlock:
    """A ``FinalizedBlock`` whose certificate verified against an established set."""

    header: BlockHeader
    block_hash: bytes
    certificate: QuorumCertificate
    results: tuple[EntryResult, ...]
    validators: ValidatorSet

    @property
    def height(self) -> int:
        """The block's height."""
        return self.header.height

    def outcomes(self) -> list[Outcome]:
        """One outcome per entry, in block order (a tx id may appear twice: replays)."""
        return [
            Outcome(
                tx_id=r.tx_id,
                height=self.header.height,
                offset=r.offset,
                code=r.code,
                block_hash=self.block_hash,
            )
            for r in self.results
        ]


def restate(members: ValidatorSet, height: int) -> ValidatorSet:
    """The same members and operators as the validator set of ``height``."""
    return ValidatorSet(height=height, members=members.members)


def trusted_signers(cert: QuorumCertificate, trusted: ValidatorSet) -> int:
    """How many distinct institutions of ``trusted`` signed ``cert`` validly with one of
    their operator keys in ``trusted``."""
    seen: set[str] = set()
    for vote in cert.votes:
        inst = trusted.institution_of(vote.operator_key_id)
        if inst is None or inst in seen:
            continue
        if vote.height == cert.height and vote.block_hash == cert.block_hash and vote.is_valid():
            seen.add(inst)
    return len(seen)


@dataclass(slots=True)
class OutcomeVerifier:
    """Verifies ``FinalizedBlock`` copies against validator sets established from the genesis."""

    genesis: Genesis
    candidates: SetSource | None = None
    _established: list[ValidatorSet] = field(default_factory=list)
    adopted: int = 0  # candidate sets adopted (membership changes followed)

    def __post_init__(self) -> None:
        if not self._established:
            self._established.append(validator_set(genesis_state(self.genesis), 1))

    @property
    def established(self) -> tuple[ValidatorSet, ...]:
        """The member sets established so far (the genesis first)."""
        return tuple(self._established)

    def _known(self, header: BlockHeader) -> ValidatorSet | None:
        for members in reversed(self._established):
            vs = restate(members, header.height)
            if vs.hash() == header.validator_set_hash:
                return vs
        return None

    def verify(self, raw: bytes) -> CertifiedBlock:
        """Decode and verify one copy. Raises :class:`DecodeError` (not a FinalizedBlock),
        :class:`CannotVerify` (its validator set cannot be established) or
        :class:`ProofError` (its certificate does not verify)."""
        decoded = decode_finalized(raw)
        header = decoded[0]
        validators = self._known(header)
        adopt = False
        if validators is None:
            validators = self._candidate(header)
            adopt = True
        header, cert, results = verify_finalized(raw, validators, decoded=decoded)
        if adopt:
            trusted = self._established[-1]
            signers = trusted_signers(cert, trusted)
            if signers <= trusted.size - trusted.quorum:
                raise CannotVerify(
                    header.height,
                    header.validator_set_hash,
                    f"only {signers} institution(s) of the last established set signed it "
                    f"(more than {trusted.size - trusted.quorum} needed)",
                )
            self._established.append(validators)
            del self._established[1:-MAX_ESTABLISHED]
            self.adopted += 1
        return CertifiedBlock(
            header=header,
            block_hash=cert.block_hash,
            certificate=cert,
            results=results,
            validators=validators,
        )

    def _candidate(self, header: BlockHeader) -> ValidatorSet:
        if self.candidates is None:
            raise CannotVerify(
                header.height,
                header.validator_set_hash,
                "not an established set, and no source of candidate sets",
            )
        try:
            candidate = self.candidates(header.height)
        except Exception as exc:  # an untrusted source: its failure is only "cannot verify"
            raise CannotVerify(
                header.height, header.validator_set_hash, f"the candidate source failed: {exc}"
            ) from exc
        if candidate is None:
            raise CannotVerify(
                header.height,
                header.validator_set_hash,
                "the candidate source has no set for this height",
            )
        candidate = restate(candidate, header.height)
        if candidate.hash() != header.validator_set_hash:
            raise CannotVerify(
                header.height,
                header.validator_set_hash,
                "the candidate set's hash differs from the header's",
            )
        return candidate


__all__ = [
    "CannotVerify",
    "CertifiedBlock",
    "Outcome",
    "OutcomeVerifier",
    "SetSource",
    "restate",
    "trusted_signers",
]
