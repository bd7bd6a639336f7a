"""Verified transaction outcomes: read from quorum-certified blocks, never from a bare claim.

Theory of operation
-------------------
* A client (SDK, gateway, batcher) learns the outcome of a transaction from a
  ``FinalizedBlock`` copy on ``<prefix>blocks`` that :func:`~ledger.finality.verify_finalized`
  accepts: the results (tx ids and codes) are bound to the header by ``tx_root``, and the
  header's hash is signed by a quorum of the validator set the header names
  (``validator_set_hash``). Receipts on ``<prefix>receipts`` are not signed and are never an
  outcome (decisions D22).
* **Which validator set may certify height ``h``.** The trust anchor is the genesis. Every
  established set has a *window* of heights: it starts at the height it was established for
  (the genesis at 1) and ends where the next established set starts. Height ``h`` is verified
  against exactly one set, the newest one starting at or below ``h``, restated for ``h``; an
  older set is never tried for it. A validator set hash binds institution ids and operator key
  ids (never public keys: votes carry those, and their key id is their SHA-256). Without the
  windows, three of four genesis members that stay members of a consortium grown to ten
  (quorum 7) could certify any later block that names the genesis set (the long-range attack:
  a set's "at most ``n - q`` faulty" holds only while it is the set).
* **Following membership changes.** When the set of ``h``'s window, restated for ``h``, does
  not have the header's hash, a *candidate* is taken from the next established set (a change
  learned at a later height may have happened earlier; blocks may be verified out of order)
  or else asked of an untrusted source (e.g. the institution's own chain projection). A
  candidate is adopted for ``h`` only if (1) its hash is the header's ``validator_set_hash``,
  (2) the certificate verifies against it, and (3) the certificate holds valid votes from more
  than ``n - q`` institutions of the set of ``h``'s window, by operator keys of that set (at
  most ``n - q`` members of a set are assumed faulty while it is the set, so at least one
  honest member signed this header, and an honest validator signs only the header it
  computed, validator set hash included). This is the "skipping" rule of light clients. The
  adopted set starts at ``h``, which ends the previous set's window there. It fails safe: a
  block whose set cannot be established raises :class:`CannotVerify` and yields no outcome.
* **Beyond the newest known change.** The newest established set's window is open: it is
  trusted for every later height until a change is established (the light-client
  assumption). A block past a change the verifier has not established names the new set's
  hash, so it is unverifiable (:class:`CannotVerify`) until the chain of trust above
  establishes that set; it is never verified against an older set.
* At most :data:`MAX_ESTABLISHED` sets are remembered; when older ones are forgotten, heights
  below the oldest remembered window are :class:`CannotVerify` (never left to the genesis).
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
from ledger.votes import votes_valid

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
    valid = votes_valid(cert.votes)  # all the signatures as one batch; same answers
    for vote, signed in zip(cert.votes, valid, strict=True):
        inst = trusted.institution_of(vote.operator_key_id)
        if inst is None or inst in seen:
            continue
        if vote.height == cert.height and vote.block_hash == cert.block_hash and signed:
            seen.add(inst)
    return len(seen)


@dataclass(slots=True)
class OutcomeVerifier:
    """Verifies ``FinalizedBlock`` copies against validator sets established from the genesis,
    each for its window of heights."""

    genesis: Genesis
    candidates: SetSource | None = None
    _established: list[ValidatorSet] = field(default_factory=list)  # by start height
    adopted: int = 0  # candidate sets adopted (membership changes followed)
    _vouched: list[QuorumCertificate | None] = field(default_factory=list, init=False)
    _floor: int = field(default=0, init=False)  # heights below it: windows forgotten

    def __post_init__(self) -> None:
        if not self._established:
            self._established.append(validator_set(genesis_state(self.genesis), 1))
        self._vouched = [None] * len(self._established)

    @property
    def established(self) -> tuple[ValidatorSet, ...]:
        """The member sets established so far, oldest first; each one's ``height`` is where its
        window starts (the genesis at 1), and the window ends where the next one starts."""
        return tuple(self._established)

    def window(self, height: int) -> ValidatorSet | None:
        """The established set whose window holds ``height``, restated for it (None: the
        window was forgotten)."""
        index = self._index(height)
        return None if index is None else restate(self._established[index], height)

    def _index(self, height: int) -> int | None:
        if height < self._floor:
            return None
        found = 0  # below the genesis' start (height 1): the genesis
        for i, members in enumerate(self._established):
            if members.height > height:
                break
            found = i
        return found

    def verify(self, raw: bytes) -> CertifiedBlock:
        """Decode and verify one copy. Raises :class:`DecodeError` (not a FinalizedBlock),
        :class:`CannotVerify` (its validator set cannot be established for its height) or
        :class:`ProofError` (its certificate does not verify)."""
        decoded = decode_finalized(raw)
        header = decoded[0]
        index = self._index(header.height)
        if index is None:
            raise CannotVerify(
                header.height,
                header.validator_set_hash,
                f"heights below {self._floor} are no longer remembered",
            )
        trusted = restate(self._established[index], header.height)
        if trusted.hash() == header.validator_set_hash:
            header, cert, results = verify_finalized(raw, trusted, decoded=decoded)
            return self._certified(header, cert, results, trusted)
        if header.height <= self._established[index].height:
            raise CannotVerify(  # another set starts here, or the height precedes the genesis
                header.height,
                header.validator_set_hash,
                "another set is established for this very height",
            )
        validators = self._candidate(header, index)
        header, cert, results = verify_finalized(raw, validators, decoded=decoded)
        signers = trusted_signers(cert, trusted)
        if signers <= trusted.size - trusted.quorum:
            raise CannotVerify(
                header.height,
                header.validator_set_hash,
                f"only {signers} institution(s) of the set established for this height signed "
                f"it (more than {trusted.size - trusted.quorum} needed)",
            )
        nxt = index + 1
        if nxt < len(self._established) and (
            restate(self._established[nxt], header.height).hash() == header.validator_set_hash
        ):
            self._established[nxt] = validators  # the known change started earlier
            self._vouched[nxt] = cert
        else:
            self._established.insert(nxt, validators)
            self._vouched.insert(nxt, cert)
            self.adopted += 1
            self._recheck(nxt + 1)
            if len(self._established) > MAX_ESTABLISHED:
                del self._established[0], self._vouched[0]
                self._floor = self._established[0].height
        return self._certified(header, cert, results, validators)

    def _recheck(self, index: int) -> None:
        """A set was inserted before ``index``: the set at ``index`` was vouched for by the one
        before the insertion, whose window now ends earlier. Keep it only if the inserted set
        vouches for its certificate too; otherwise forget it and every later set (each was
        vouched for by its predecessor); they are established again when blocks need them."""
        if index >= len(self._established):
            return
        cert, voucher = self._vouched[index], self._established[index - 1]
        if cert is None or trusted_signers(cert, voucher) <= voucher.size - voucher.quorum:
            del self._established[index:], self._vouched[index:]

    @staticmethod
    def _certified(
        header: BlockHeader,
        cert: QuorumCertificate,
        results: tuple[EntryResult, ...],
        validators: ValidatorSet,
    ) -> CertifiedBlock:
        return CertifiedBlock(
            header=header,
            block_hash=cert.block_hash,
            certificate=cert,
            results=results,
            validators=validators,
        )

    def _candidate(self, header: BlockHeader, index: int) -> ValidatorSet:
        if index + 1 < len(self._established):
            known = restate(self._established[index + 1], header.height)
            if known.hash() == header.validator_set_hash:
                return known  # the next established set, vouched for below like any candidate
        if self.candidates is None:
            raise CannotVerify(
                header.height,
                header.validator_set_hash,
                "not the set established for this height, and no source of candidate sets",
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
