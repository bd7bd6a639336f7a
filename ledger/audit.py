"""Audit of the ledger logs, pure: re-execute the tx log and check every published fact.

Theory of operation
-------------------
* :class:`ChainAudit` is fed the four ledger logs (messages as ``(offset, bytes)``; the
  caller reads them): every ``blocks`` copy and every vote first (they are small), then
  ``tx`` in offset order, then ``receipts``. ``tx`` is cut by :class:`~ledger.cutter.Cutter`
  and executed by :class:`~ledger.execution.LedgerMachine` exactly as validators do, so every
  envelope's signature, nonce, permission and result code is recomputed, never trusted.
  The caller may verify signatures itself beforehand (in parallel) and say so per message
  (``feed_tx(..., signature_verified=True)``); only the Ed25519 verify of those is skipped.
* Each cut block ``h`` is compared with every ``FinalizedBlock`` copy of height ``h``, in log
  order: a copy must decode, carry a certificate that :func:`~ledger.finality.verify_finalized`
  accepts against the validator set of ``h`` (members after ``h-1``, from the replayed state),
  and name the replayed header (hash link, offsets, ``tx_root``, ``state_root``,
  ``validator_set_hash``, timestamp) and results (offsets included). The first such copy is
  the *canonical* one (what projectors keep). Copies that fail are findings with the exact
  reason and the differing header fields; heights without a valid copy below a certified one
  are gaps; copies for heights the tx log never reaches are forgeries.
* Votes: :mod:`ledger.audit_votes` (equivocations, a quorum on another hash, impostor and
  non-member votes, the first quorum). Receipts: :mod:`ledger.audit_receipts` (each receipt
  byte-identical to the replayed entry's, none missing).
* Membership history (the validator set whenever it changes) is part of the result.
  :mod:`ledger.audit_stores` checks Layer-2 roots, anchored objects and table rows against
  what a store holds; :mod:`ledger.audit_findings` holds what every check reports.
* Findings have a severity: ``error`` (the logs or a projection contradict the replay: the
  audit fails), ``warning`` (misbehaviour the protocol tolerates, e.g. an equivocating
  operator), ``info`` (not checkable yet, e.g. a block cut but not final).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ledger import follower
from ledger.audit_findings import ERROR, INFO, WARNING, Findings, show
from ledger.audit_receipts import ReceiptAudit
from ledger.audit_votes import VoteAudit
from ledger.blocks import block_receipts, decode_finalized
from ledger.cutter import CutBlock
from ledger.errors import DecodeError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import (
    QuorumCertificate,
)
from ledger.follower import Certified, ChainFollower, Decoded, Rejected, Verdict
from ledger.genesis import Genesis
from ledger.hashing import sha256
from ledger.members import ValidatorSet
from ledger.snapshot import SnapshotMeta
from ledger.state import WorldState

RECENT_COPIES = 256  # decoded block copies remembered (validators publish identical bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipChange:
    """The validator set from ``height`` on (until the next change)."""

    height: int
    members: tuple[str, ...]
    quorum: int
    validator_set_hash: bytes
    operators: tuple[tuple[str, tuple[bytes, ...]], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Canonical:
    """The first valid copy of a height: what every reader keeps."""

    offset: int
    certificate: QuorumCertificate
    raw: bytes


BlockHook = Callable[[ExecutedBlock, CutBlock, Canonical | None], None]


def _shown(diff: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    """A header mismatch in a finding: field -> {expected, got}."""
    return {name: {"expected": show(a), "got": show(b)} for name, (a, b) in diff.items()}


class ChainAudit:
    """Re-executes the tx log and checks blocks, votes and receipts against it."""

    def __init__(
        self,
        genesis: Genesis,
        *,
        topics: Mapping[str, str] | None = None,
        checkpoint: tuple[WorldState, SnapshotMeta] | None = None,
        stop_height: int | None = None,
        on_block: BlockHook | None = None,
    ) -> None:
        self.genesis = genesis
        self.topics = dict(topics or {t: t for t in ("tx", "votes", "blocks", "receipts")})
        if checkpoint is None:
            self.machine = LedgerMachine(genesis)
            self.start_height, self.tx_offset, self.votes_offset = 0, 0, 0
        else:
            state, meta = checkpoint
            self.machine = LedgerMachine.resume(genesis, state, meta.block_hash)
            self.start_height, self.tx_offset = meta.height, meta.tx_offset
            self.votes_offset = meta.votes_offset
        self.follower = ChainFollower(genesis, self.machine)
        self.stop_height = stop_height
        self.on_block = on_block
        self.findings = Findings()
        self.membership: list[MembershipChange] = []
        self.codes: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.audited_height = self.start_height  # highest height with a canonical copy
        self.canonical_hashes: dict[int, bytes] = {}
        self.last_tx_offset = self.tx_offset - 1
        self._copies: dict[int, list[tuple[int, bytes, Decoded]]] = {}
        self._recent: dict[bytes, Decoded] = {}
        self.votes = VoteAudit(self.findings, self.topics["votes"], self.start_height)
        self.receipts = ReceiptAudit(self.findings, self.topics["receipts"], self.start_height)
        self._uncertified: list[int] = []
        self._covered = self.tx_offset - 1  # last tx offset inside a replayed block
        self._verdicts: dict[bytes, Verdict] = {}  # copies of the height being checked

    # -- helpers --------------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Height of the last replayed block."""
        return self.machine.height

    @property
    def done(self) -> bool:
        """Whether ``stop_height`` is reached (feed no more tx)."""
        return self.stop_height is not None and self.machine.height >= self.stop_height

    # -- blocks and votes (fed before tx) -------------------------------------------------
    def add_block_copy(self, offset: int, raw: bytes) -> None:
        """A ``blocks`` message (identical copies, one per validator, are decoded once)."""
        self.counts["block_copies"] += 1
        decoded = self._recent.get(raw)
        if decoded is None:
            try:
                decoded = decode_finalized(raw)
            except DecodeError as exc:
                self.findings.report(
                    "blocks",
                    "block.malformed",
                    ERROR,
                    f"blocks message at offset {offset} is not a valid FinalizedBlock: {exc}",
                    topic=self.topics["blocks"],
                    offset=offset,
                    details={"bytes": len(raw), "sha256": sha256(raw)},
                )
                return
            if len(self._recent) >= RECENT_COPIES:
                del self._recent[next(iter(self._recent))]
            self._recent[raw] = decoded
        height = decoded[0].height
        if height <= self.start_height:
            self.counts["block_copies_before_checkpoint"] += 1
            return
        self._copies.setdefault(height, []).append((offset, raw, decoded))

    def add_vote(self, offset: int, raw: bytes) -> None:
        """A ``votes`` message (buffered until its height's validator set is known)."""
        self.counts["votes"] += 1
        self.votes.add(offset, raw, self.machine.height)

    # -- tx -------------------------------------------------------------------------------
    def feed_tx(
        self, offset: int, timestamp_ms: int, raw: bytes, *, signature_verified: bool = False
    ) -> None:
        """The next ``tx`` message (offset order). ``signature_verified``: the caller has
        checked :func:`ledger.tx.signature_verifies` for ``raw`` (trusted, see
        :func:`ledger.execution.execute_block`)."""
        if self.done or offset < self.tx_offset:
            return
        self.last_tx_offset = offset
        done = self.follower.cut(offset, timestamp_ms, raw, signature_verified=signature_verified)
        if done is not None:
            self._apply(*done)

    def _apply(self, cut: CutBlock, verified: set[bytes]) -> None:
        executed = self.machine.execute(cut, verified_signatures=verified)
        height, validators = cut.height, executed.validator_set
        self._track_membership(validators)
        block_hash = executed.block_hash
        self.votes.replayed(validators, height, block_hash)
        canonical = self._check_copies(executed, block_hash)
        if self.on_block is not None:
            self.on_block(executed, cut, canonical)
        self.machine.commit(executed)
        self.votes.committed(height)
        self.counts["blocks"] += 1
        self.codes.update(result.code.name for result in executed.results)
        receipts = block_receipts(executed.results, height=height, block_hash=block_hash)
        self.receipts.replayed(height, block_hash, executed.results, receipts)
        self._covered = max(self._covered, cut.last_offset)

    def _track_membership(self, validators: ValidatorSet) -> None:
        operators = tuple(sorted((i, tuple(sorted(ops))) for i, ops in validators.members.items()))
        if self.membership and self.membership[-1].operators == operators:
            return
        self.membership.append(
            MembershipChange(
                height=validators.height,
                members=tuple(sorted(validators.members)),
                quorum=validators.quorum,
                validator_set_hash=validators.hash(),
                operators=operators,
            )
        )

    def _check_copies(self, executed: ExecutedBlock, block_hash: bytes) -> Canonical | None:
        height = executed.header.height
        canonical: Canonical | None = None
        self._verdicts.clear()
        verdicts = (
            self._verdict(off, raw, dec, executed) for off, raw, dec in self._copies.pop(height, [])
        )
        for verdict, mismatch, chosen in follower.canonical(executed, verdicts):
            if canonical is not None and verdict.raw == canonical.raw:
                continue  # an identical copy of the canonical block
            if isinstance(verdict, Certified) and chosen:
                canonical = Canonical(
                    offset=verdict.offset, certificate=verdict.certificate, raw=verdict.raw
                )
            else:
                self._copy_finding(executed, verdict, mismatch, canonical)
        if canonical is None:
            self._uncertified.append(height)
            return None
        self.audited_height = height
        self.canonical_hashes[height] = block_hash
        self.votes.check_first_quorum(
            height, canonical.certificate, self.topics["blocks"], canonical.offset
        )
        return canonical

    def _copy_finding(
        self,
        executed: ExecutedBlock,
        verdict: Verdict,
        mismatch: follower.Mismatch | None,
        canonical: Canonical | None,
    ) -> None:
        """The finding for a copy that is not the canonical one."""
        height, offset = executed.header.height, verdict.offset
        where: dict[str, Any] = {"height": height, "topic": self.topics["blocks"], "offset": offset}
        if isinstance(verdict, Rejected):
            diff = _shown(follower.header_mismatch(executed.header, verdict.header))
            message = (
                f"block copy for height {height} at offset {offset} has no valid quorum "
                f"certificate: {verdict.reason}"
            )
            forged: dict[str, Any] = {"differs_from_replay": diff}
            self.findings.report("blocks", "block.forged", ERROR, message, **where, details=forged)
        elif mismatch is not None and mismatch.header:
            diff = _shown(mismatch.header)
            link = " (hash link broken)" if "prev_hash" in diff else ""
            message = (
                f"a quorum certified a block {height} that differs from the replay in "
                f"{', '.join(diff)}{link}"
            )
            self.findings.report("blocks", "block.mismatch", ERROR, message, **where, details=diff)
        elif mismatch:
            bad = list(mismatch.positions)
            message = (
                f"block {height} at offset {offset}: entry results differ from the replay "
                f"from position {bad[0]}"
            )
            details: dict[str, Any] = {"positions": bad[:20]}
            self.findings.report(
                "blocks", "block.results_differ", ERROR, message, **where, details=details
            )
        elif canonical is not None:
            message = (
                f"block {height} at offset {offset}: a second valid copy with other bytes "
                f"than the first (offset {canonical.offset})"
            )
            self.findings.report("blocks", "block.variant", WARNING, message, **where)

    def _verdict(
        self, offset: int, raw: bytes, decoded: Decoded, executed: ExecutedBlock
    ) -> Verdict:
        """The certificate step for one copy (identical bytes are checked once)."""
        known = self._verdicts.get(raw)
        if known is None:
            known = self._verdicts[raw] = follower.check_copy(
                offset, raw, executed.validator_set, decoded
            )
        return replace(known, offset=offset)

    # -- receipts -------------------------------------------------------------------------
    def feed_receipt(self, offset: int, raw: bytes) -> None:
        """A ``receipts`` message (after the tx log has been replayed)."""
        self.counts["receipts"] += 1
        self.receipts.add(offset, raw, replayed_height=self.machine.height, covered=self._covered)

    # -- the end --------------------------------------------------------------------------
    def finish(self) -> None:
        """Checks that need every log read: gaps, forgeries beyond the log, missing receipts."""
        blocks = self.topics["blocks"]
        if not self.done:
            for height, copies in sorted(self._copies.items()):
                for offset, _, (header, _, _) in copies:
                    self.findings.report(
                        "blocks",
                        "block.beyond_log",
                        ERROR,
                        f"block copy for height {height} at offset {offset}: the tx log "
                        f"ends at height {self.machine.height}",
                        height=height,
                        topic=blocks,
                        offset=offset,
                        details={"hash": header.hash()},
                    )
        for height in self._uncertified:
            if height < self.audited_height:
                self.findings.report(
                    "blocks",
                    "block.missing",
                    ERROR,
                    f"block {height} has no valid FinalizedBlock although block "
                    f"{self.audited_height} has one",
                    height=height,
                    topic=blocks,
                )
        pending = [h for h in self._uncertified if h > self.audited_height]
        if pending:
            self.findings.report(
                "blocks",
                "block.not_final_yet",
                INFO,
                f"{len(pending)} block(s) cut from the tx log are not final yet "
                f"(heights {pending[0]}..{pending[-1]})",
                height=pending[0],
            )
        if self.follower.pending_entries and not self.done:
            self.findings.report(
                "tx",
                "tx.pending",
                INFO,
                f"{self.follower.pending_entries} tx message(s) after the last cut block",
            )
        self.receipts.finish(self.audited_height)
