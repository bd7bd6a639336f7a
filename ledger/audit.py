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
* Votes go through a :class:`~ledger.finality.FinalityTracker` fed the replayed validator
  sets: equivocations are reported, a quorum on a hash that differs from the replay is an
  error, and the canonical certificate must be the first quorum in vote order. Once the
  validator set of a vote's height is known, a vote whose operator key id is a member's but
  whose signature does not verify is an impostor (error), and a vote of a key that is no
  member's operator at that height is reported (warning); the tracker ignores both.
* Receipts must be byte-identical to the receipt of the replayed entry at their offset; every
  entry of a certified height below the newest receipt height must have one. A receipt that
  is not is checked against the replayed outcome of its tx, whatever height it claims (a
  forged receipt naming a far height is an error as soon as its tx or its offset has been
  replayed); only a receipt whose tx and offset both lie beyond the replay stays pending
  (info), and so does a later ``BAD_NONCE`` receipt of a replayed tx id (a replayed
  envelope).
* Membership history (the validator set whenever it changes) is part of the result.
  :mod:`ledger.audit_stores` checks Layer-2 roots, anchored objects and table rows against
  what a store holds; :mod:`ledger.audit_findings` holds what every check reports.
* Findings have a severity: ``error`` (the logs or a projection contradict the replay: the
  audit fails), ``warning`` (misbehaviour the protocol tolerates, e.g. an equivocating
  operator), ``info`` (not checkable yet, e.g. a block cut but not final).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ledger import follower
from ledger.audit_findings import ERROR, INFO, WARNING, Finding, Findings, show
from ledger.blocks import EntryResult, block_receipts, decode_finalized
from ledger.cutter import CutBlock
from ledger.errors import DecodeError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import (
    Divergence,
    Equivocation,
    Event,
    FinalityTracker,
    Finalized,
    QuorumCertificate,
)
from ledger.follower import Certified, ChainFollower, Decoded, Rejected, Verdict
from ledger.genesis import Genesis
from ledger.hashing import sha256
from ledger.members import ValidatorSet
from ledger.results import ResultCode
from ledger.snapshot import SnapshotMeta
from ledger.state import WorldState
from ledger.votes import Vote, decode_vote
from schemas.codec import decode
from schemas.errors import CodecError

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
        self._tracker = FinalityTracker()
        self._vote_final: dict[int, Finalized] = {}
        self._uncertified: list[int] = []
        self._receipt_bytes: dict[bytes, int] = {}
        self._entries: dict[int, tuple[int, EntryResult, bytes]] = {}
        self._receipted: set[int] = set()
        self._receipt_top = 0
        self._receipts_pending = 0
        self._first_offset: dict[bytes, int] = {}  # tx id -> offset of its first entry
        self._covered = self.tx_offset - 1  # last tx offset inside a replayed block
        self._vote_checks: dict[int, list[tuple[int, Vote]]] = {}
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

    def _add(self, check: str, kind: str, severity: str, message: str, **where: Any) -> None:
        self.findings.add(
            Finding(check=check, kind=kind, severity=severity, message=message, **where)
        )

    # -- blocks and votes (fed before tx) -------------------------------------------------
    def add_block_copy(self, offset: int, raw: bytes) -> None:
        """A ``blocks`` message (identical copies, one per validator, are decoded once)."""
        self.counts["block_copies"] += 1
        decoded = self._recent.get(raw)
        if decoded is None:
            try:
                decoded = decode_finalized(raw)
            except DecodeError as exc:
                self._add(
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
        """A ``votes`` message (buffered by the tracker until its height's set is known)."""
        self.counts["votes"] += 1
        try:
            vote = decode_vote(raw)
        except DecodeError as exc:
            self._add(
                "votes",
                "vote.malformed",
                WARNING,
                f"votes message at offset {offset} is not a BlockVote: {exc}",
                topic=self.topics["votes"],
                offset=offset,
            )
            return
        if vote.height <= self.start_height:
            return
        if vote.height > self.machine.height:
            self._vote_checks.setdefault(vote.height, []).append((offset, vote))
        self._on_events(self._tracker.add_vote(vote))

    def _check_votes(self, validators: ValidatorSet) -> None:
        """Impostor and non-member votes of ``validators.height`` (the tracker ignores them)."""
        topic = self.topics["votes"]
        for offset, vote in self._vote_checks.pop(validators.height, ()):
            inst = validators.institution_of(vote.operator_key_id)
            where: dict[str, Any] = {"height": vote.height, "topic": topic, "offset": offset}
            details = {"operator_key_id": vote.operator_key_id, "block_hash": vote.block_hash}
            if inst is None:
                self._add(
                    "votes",
                    "vote.non_member",
                    WARNING,
                    f"vote at offset {offset} for height {vote.height} by key "
                    f"{vote.operator_key_id.hex()[:16]}, which is no member's operator there",
                    **where,
                    details={**details, "signature_valid": vote.is_valid()},
                )
            elif not vote.is_valid():
                self._add(
                    "votes",
                    "vote.impostor",
                    ERROR,
                    f"vote at offset {offset} for height {vote.height} names an operator of "
                    f"{inst} but its signature does not verify for that key",
                    **where,
                    details={**details, "institution": inst, "public_key": vote.public_key},
                )

    def _on_events(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, Finalized):
                self._vote_final[event.height] = event
            elif isinstance(event, Equivocation):
                self._add(
                    "votes",
                    "vote.equivocation",
                    WARNING,
                    f"operator {event.first.operator_key_id.hex()[:16]} signed two hashes "
                    f"at height {event.first.height}",
                    height=event.first.height,
                    details={
                        "operator_key_id": event.first.operator_key_id,
                        "hash_a": event.first.block_hash,
                        "hash_b": event.second.block_hash,
                    },
                )
            elif isinstance(event, Divergence):
                self._add(
                    "votes",
                    "votes.quorum_on_other_hash",
                    ERROR,
                    f"a quorum voted for a block {event.height} that the replay does not compute",
                    height=event.height,
                    details={"replayed_hash": event.own_hash, "voted_hash": event.final_hash},
                )

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
        self._check_votes(validators)
        self._on_events(self._tracker.set_validators(validators))
        block_hash = executed.block_hash
        self._on_events(self._tracker.set_own_hash(height, block_hash))
        canonical = self._check_copies(executed, block_hash)
        if self.on_block is not None:
            self.on_block(executed, cut, canonical)
        self.machine.commit(executed)
        self._tracker.forget_below(height - 2)
        self._vote_final.pop(height - 2, None)
        self.counts["blocks"] += 1
        receipts = block_receipts(executed.results, height=height, block_hash=block_hash)
        for result, raw in zip(executed.results, receipts, strict=True):
            self.codes[result.code.name] += 1
            self._receipt_bytes[raw] = result.offset
            self._entries[result.offset] = (height, result, block_hash)
            self._first_offset.setdefault(result.tx_id, result.offset)
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
        voted = self._vote_final.get(height)
        if voted is not None and voted.certificate.record() != canonical.certificate.record():
            self._add(
                "votes",
                "certificate.not_first_quorum",
                WARNING,
                f"block {height}: the published certificate is not the first quorum of "
                "the vote log",
                height=height,
                topic=self.topics["blocks"],
                offset=canonical.offset,
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
            self._add("blocks", "block.forged", ERROR, message, **where, details=forged)
        elif mismatch is not None and mismatch.header:
            diff = _shown(mismatch.header)
            link = " (hash link broken)" if "prev_hash" in diff else ""
            message = (
                f"a quorum certified a block {height} that differs from the replay in "
                f"{', '.join(diff)}{link}"
            )
            self._add("blocks", "block.mismatch", ERROR, message, **where, details=diff)
        elif mismatch:
            bad = list(mismatch.positions)
            message = (
                f"block {height} at offset {offset}: entry results differ from the replay "
                f"from position {bad[0]}"
            )
            details: dict[str, Any] = {"positions": bad[:20]}
            self._add("blocks", "block.results_differ", ERROR, message, **where, details=details)
        elif canonical is not None:
            message = (
                f"block {height} at offset {offset}: a second valid copy with other bytes "
                f"than the first (offset {canonical.offset})"
            )
            self._add("blocks", "block.variant", WARNING, message, **where)

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
        entry_offset = self._receipt_bytes.get(raw)
        if entry_offset is not None:
            self._receipted.add(entry_offset)
            self._receipt_top = max(self._receipt_top, self._entries[entry_offset][0])
            return
        topic = self.topics["receipts"]
        try:
            _, record = decode(raw, "Receipt")
        except CodecError as exc:
            self._add(
                "receipts",
                "receipt.malformed",
                ERROR,
                f"receipts message at offset {offset} is not a Receipt: {exc}",
                topic=topic,
                offset=offset,
            )
            return
        height = record["height"]
        if height <= self.start_height:
            return
        found = self._entries.get(record["offset"])
        first = self._first_offset.get(record["tx_id"])
        if found is None and first is not None:
            found = self._entries.get(first)  # the outcome of its tx, at another offset
        beyond = height > self.machine.height and record["offset"] > self._covered
        if beyond and (first is None or record["result_code"] == int(ResultCode.BAD_NONCE)):
            self._receipts_pending += 1  # a tx (or a replay of one) the replay has not reached
            return
        if height <= self.machine.height:
            self._receipt_top = max(self._receipt_top, height)
        details: dict[str, Any] = {"receipt": {k: show(v) for k, v in record.items()}}
        what = "contradicts the replayed entry"
        if found is not None:
            h, result, block_hash = found
            details["replayed"] = {
                "tx_id": show(result.tx_id),
                "height": h,
                "offset": result.offset,
                "result_code": int(result.code),
                "block_hash": show(block_hash),
            }
            if result.tx_id == record["tx_id"]:
                what = f"contradicts the outcome of its tx (block {h}, {result.code.name})"
        else:
            what = "names no replayed entry (no block holds its tx at that offset)"
        self._add(
            "receipts",
            "receipt.mismatch",
            ERROR,
            f"receipt at offset {offset} (tx offset {record['offset']}, height {height}) {what}",
            topic=topic,
            offset=offset,
            height=height,
            details=details,
        )

    # -- the end --------------------------------------------------------------------------
    def finish(self) -> None:
        """Checks that need every log read: gaps, forgeries beyond the log, missing receipts."""
        blocks = self.topics["blocks"]
        if not self.done:
            for height, copies in sorted(self._copies.items()):
                for offset, _, (header, _, _) in copies:
                    self._add(
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
                self._add(
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
            self._add(
                "blocks",
                "block.not_final_yet",
                INFO,
                f"{len(pending)} block(s) cut from the tx log are not final yet "
                f"(heights {pending[0]}..{pending[-1]})",
                height=pending[0],
            )
        if self.follower.pending_entries and not self.done:
            self._add(
                "tx",
                "tx.pending",
                INFO,
                f"{self.follower.pending_entries} tx message(s) after the last cut block",
            )
        top = min(self._receipt_top - 1, self.audited_height)
        for offset, (height, result, _) in self._entries.items():
            if height <= top and offset not in self._receipted:
                self._add(
                    "receipts",
                    "receipt.missing",
                    ERROR,
                    f"entry at tx offset {offset} of block {height} has no receipt",
                    height=height,
                    topic=self.topics["receipts"],
                    details={"tx_id": result.tx_id, "tx_offset": offset},
                )
        if self._receipts_pending:
            self._add(
                "receipts",
                "receipt.pending",
                INFO,
                f"{self._receipts_pending} receipt(s) for heights above the replay",
            )
