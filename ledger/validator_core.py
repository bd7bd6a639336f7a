"""The validator as a pure state machine: log messages in, actions out (sans-I/O).

Theory of operation
-------------------
* The shell (``streams/validator.py``) feeds the logs in their own order (``on_tx``,
  ``on_vote``, ``on_feed``, ``on_published``) and calls ``on_tick`` with the current time. Each
  returns the actions the shell must carry out (:mod:`ledger.validator_actions`); the core never
  touches a socket, a file or a clock.
* Cutting and executing run ahead of finality (pipelining): block ``h`` is cut, executed on the
  state after ``h-1`` as this validator computed it, committed to the *speculative* machine, and
  voted on at once, whether or not ``h-1`` is final yet.
* A block is published when it is final (the finality tracker's quorum certificate) *and* this
  validator's own execution of that height produced the same hash. Publication happens in height
  order, and only then is the block's write set applied to the *final* state, the one snapshots
  are taken from. So a snapshot is always of a state the quorum signed.
* A validator votes at ``h`` only if its operator is in the validator set of ``h`` and ``h`` is
  not final yet (a replaying validator does not vote on history). After a divergence (its hash
  differs from the final one) it never votes again; the shell stops it.
* A marker ``TimeToCut(h)`` is due when the pending block's oldest entry has waited longer than
  the block interval (:func:`ledger.cutter.time_to_cut_due`), the validator has read the whole
  tx log (it is not replaying), and it has not emitted one for ``h`` already.
* One publisher per height for the consortium (D47, after D38's one per institution):
  :mod:`ledger.publication` publishes a final block at once or holds it until its copy is read
  (:meth:`ValidatorCore.on_published`). Markers stay per institution: its first operator emits
  them, a standby of rank ``r > 0`` ``r * takeover_delay_ms`` later.
* A following standby (D52, D57) applies final blocks from its primary's feeds
  (:mod:`ledger.standby_feed`), does not vote and does not read the tx log (``reads_tx``).
  *Eager* (:mod:`ledger.standby_follow`), it reads the tx log from ``tx_seek``, runs blocks
  against the final hash where there is one (signatures vouched for; a miss runs it again with
  verification) and votes on its own where there is none.
* Equivocation evidence found in the vote log, late votes included, becomes a
  ``ReportEquivocation`` transaction (:mod:`ledger.evidence`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ledger.cutter import CutBlock, Cutter, Entry, TimeToCut, time_to_cut_due
from ledger.errors import DecodeError
from ledger.evidence import EvidenceBook
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import Divergence, Equivocation, Event, FinalityTracker, Finalized
from ledger.keys import KeyPair
from ledger.members import ValidatorSet
from ledger.publication import Publication, takeover_delay_ms
from ledger.snapshot import SnapshotMeta
from ledger.standby_feed import FeedBuffer, encode_feed
from ledger.standby_follow import StandbyClock
from ledger.state import WorldState
from ledger.validator_actions import (
    EVIDENCE_WINDOW,
    Action,
    Counters,
    Diverged,
    EmitMarker,
    SendFeed,
    SendVote,
    SubmitTx,
)
from ledger.verify_ahead import VERIFY_AHEAD_MIN, VerifyAhead
from ledger.votes import decode_vote, sign_vote

__all__ = [
    "EVIDENCE_WINDOW",
    "Action",
    "Counters",
    "Diverged",
    "EmitMarker",
    "SendFeed",
    "SendVote",
    "SubmitTx",
    "ValidatorCore",
]


@dataclass(slots=True)
class _Resume:
    final_height: int
    final_hash: bytes
    next_tx_offset: int
    final_state: WorldState
    vote_offsets: dict[int, int] = field(default_factory=dict)


class ValidatorCore:
    """One operator's view of the chain; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        machine: LedgerMachine,
        final_state: WorldState,
        operator: KeyPair,
        next_tx_offset: int = 0,
    ) -> None:
        if final_state.height != machine.height or final_state.root != machine.state.root:
            raise DecodeError("the final state and the machine must start at the same height")
        params = machine.params
        self.machine = machine
        self.operator = operator
        self.chain_id = params.chain_id
        self.block_interval_ms = params.block_interval_ms
        self.cutter = self._fresh_cutter()
        self.tracker = FinalityTracker()
        self.final = _Resume(
            final_height=machine.height,
            final_hash=machine.last_hash,
            next_tx_offset=next_tx_offset,
            final_state=final_state,
        )
        self.executed: dict[int, ExecutedBlock] = {}
        self.voted_height = machine.height
        self.diverged: Diverged | None = None
        self.counters = Counters()
        self._marker_for: int | None = None
        self.evidence = EvidenceBook(operator, params.chain_id)
        self._vouched: set[bytes] = set()  # pending envelopes whose signature the shell vouched for
        self._ahead = VerifyAhead()  # or that were checked while waiting for the cut (D73)
        # ranked publication (D38): this institution's operator key ids, sorted
        self.takeover_ms = takeover_delay_ms(params.block_interval_ms)
        self._own_ops: tuple[bytes, ...] = ()
        self.publication = Publication(operator.key_id, params.block_interval_ms)  # D47
        self._set_own_ops(machine.validator_set())
        self._queue: deque[CutBlock] = deque()  # cut, not executed yet
        self.standby = StandbyClock()  # when a standby follows or takes over (D52, D57)
        self.feeds = FeedBuffer()  # a following standby's feeds from its primary (D52)
        self._cut_offset = next_tx_offset  # the tx offset after the machine's last block
        self._tx_expect = next_tx_offset  # tx messages below it are stale (before a seek)
        self._reading = self.reads_tx
        self.tx_seek = next_tx_offset if self._reading else None  # shell: (re)start here

    # -- inputs --------------------------------------------------------------------------
    def on_tx(
        self, offset: int, timestamp_ms: int, raw: bytes, *, signature_verified: bool = False
    ) -> list[Action]:
        """The next message of ``pantheon.tx``.

        ``signature_verified``: the shell vouches that :func:`ledger.tx.signature_verifies`
        holds for ``raw`` (its worker processes checked it); execution then skips only that
        verify call (:func:`ledger.execution.execute_block`).
        """
        if not self._reading or offset < self._tx_expect:
            return []  # a following standby cuts nothing (D57); stale: read before a seek
        self._tx_expect = offset + 1
        if signature_verified:
            self._vouched.add(raw)
        block = self.cutter.feed(offset, timestamp_ms, raw)
        if block is None:
            return []
        self._queue.append(block)
        return self._drain()

    def verify_ahead(self, min_batch: int = VERIFY_AHEAD_MIN) -> int:
        """:meth:`~ledger.verify_ahead.VerifyAhead.check` of the pending block (D73)."""
        return self._ahead.check(self.cutter, self._vouched, min_batch) if self._reading else 0

    def _drain(self) -> list[Action]:
        """Run the cut blocks in order (see the module docstring): a block with a reference
        hash runs first with every signature vouched for, and again with verification if it
        misses (D38); a following standby applies final blocks from feeds (D52, D57)."""
        actions: list[Action] = []
        while self._queue and self.diverged is None and not self.following:
            block = self._queue.popleft()
            actions += self._handle(self.tracker.set_validators(self.machine.validator_set()))
            final = self.tracker.final(block.height)
            executed: ExecutedBlock | None = None
            ref = self._reference_hash(block.height)
            behind_primary = ref is not None and final is None
            if ref is not None and executed is None:
                guess = self.machine.execute(
                    block, verified_signatures=frozenset(e.raw for e in block.entries)
                )
                if guess.block_hash == ref:
                    executed = guess
                    self.counters.optimistic += 1
                else:
                    self.counters.optimistic_misses += 1
            if executed is None:
                executed = self.machine.execute(block, verified_signatures=self._vouched)
            actions += self._run(block.entries, executed, vote_late=behind_primary)
        while self.following and self.diverged is None:  # D52, D57
            height = self.machine.height + 1
            actions += self._handle(self.tracker.set_validators(self.machine.validator_set()))
            final = self.tracker.final(height)
            if final is None or not self.feeds.has(height):
                break
            applied = self.feeds.apply(
                height,
                prev_hash=self.machine.last_hash,
                prev_root=self.machine.state.root,
                validators=self.machine.validator_set(),
                final_hash=final.block_hash,
            )
            if applied is None:  # dropped; the real one may come yet (else: take over)
                self.counters.feed_misses += 1
                break
            self.counters.applied += 1
            self.standby.progressed()
            actions += self._run((), applied, vote_late=False)
        self._sync_reading()
        return actions

    def _final_top(self) -> int:
        """The highest height final here in a row above the machine's (0: none)."""
        height = self.machine.height
        while self.tracker.final(height + 1) is not None:
            height += 1
        return height if height > self.machine.height else 0

    def _fresh_cutter(self) -> Cutter:
        params = self.machine.params
        return Cutter(
            chain_id=self.chain_id,
            next_height=self.machine.height + 1,
            max_block_txs=params.max_block_txs,
            max_block_bytes=params.max_block_bytes,
        )

    @property
    def reads_tx(self) -> bool:
        """Whether this validator reads the tx log (all but a following standby, D57)."""
        return not self.following

    def note_tx_end(self, end: int) -> None:
        """The end of the tx log as the shell last saw it (a following standby asks now and
        then: work it has not seen may wait there, D57)."""
        self.standby.tx_end = end

    def _sync_reading(self) -> None:
        """Start or stop reading the tx log as :attr:`reads_tx` changed (D57): a standby
        that starts cuts from the offset after its last block, its pending cut dropped."""
        if self.reads_tx == self._reading:
            return
        self._reading = self.reads_tx
        self._queue.clear()
        self._vouched.clear()
        if self._reading:
            self.cutter = self._fresh_cutter()
            self._tx_expect = self.tx_seek = self._cut_offset

    def _reference_hash(self, height: int) -> bytes | None:
        final = self.tracker.final(height)
        if final is not None:
            return final.block_hash
        if self.rank == 0:
            return None
        votes = self.tracker.first_votes(height)
        for kid in self._own_ops[: self.rank]:
            if kid in votes:
                return votes[kid].block_hash
        return None

    def _run(
        self, entries: tuple[Entry, ...], executed: ExecutedBlock, *, vote_late: bool
    ) -> list[Action]:
        """Commit ``executed`` (of the cut ``entries``, none when applied from a feed) and
        vote on it unless it is final already (a replaying validator, or a following standby,
        does not vote on history), or ``vote_late`` (an eager standby votes after its
        primary); send it to this operator's standbys."""
        for entry in entries:
            self._vouched.discard(entry.raw)
        limit = (len(self._queue) + 2) * self.machine.params.max_block_txs
        if len(self._vouched) > limit:  # never unbounded (it only saves verify calls)
            self._vouched.clear()
        self.machine.commit(executed)
        height = executed.header.height
        self._cut_offset = executed.header.last_offset + 1
        self.executed[height] = executed
        self._set_own_ops(executed.validator_set)
        events = self.tracker.set_validators(executed.validator_set)
        events += self.tracker.set_own_hash(height, executed.block_hash)
        actions: list[Action] = []
        if not self.following and self.operator.key_id in self._own_ops[:-1]:
            actions.append(SendFeed(height, encode_feed(executed)))
        if (
            self.diverged is None
            and executed.validator_set.institution_of(self.operator.key_id) is not None
            and (vote_late or self.tracker.final(height) is None)
        ):
            vote = sign_vote(self.operator, height=height, block_hash=executed.block_hash)
            actions.append(SendVote(height, executed.block_hash, vote.encode()))
            self.voted_height = height
        return actions + self._handle(events)

    def on_vote(self, offset: int, raw: bytes) -> list[Action]:
        """The next message of ``pantheon.votes``."""
        try:
            vote = decode_vote(raw)
        except DecodeError:
            self.counters.malformed_votes += 1
            return []
        self.counters.votes_seen += 1
        if vote.height <= self.final.final_height:
            late = self.evidence.late_vote(vote, self.machine.state)
            return self._handle([late]) if late is not None else []
        self.final.vote_offsets.setdefault(vote.height, offset)
        if (
            (self.eager or not self.standby.primary_heard)
            and vote.operator_key_id in self._own_ops[: self.rank]
            and vote.height > self.final_height
            and vote.is_valid()
        ):  # a live primary (votes on heights not final here): followed again, caught up
            self.standby.primary_voted(self.machine.height)
        actions = self._handle(self.tracker.add_vote(vote))
        return actions + self._drain()

    def on_feed(self, sender_key_id: bytes, raw: bytes) -> list[Action]:
        """A message of ``pantheon.feeds`` from operator ``sender_key_id`` (D52): kept if
        it comes from a lower-ranked operator of this institution and is of a height not
        applied yet (the feed itself is checked against the final hash when applied)."""
        if sender_key_id not in self._own_ops[: self.rank]:
            return []
        self.feeds.add(raw, above=self.machine.height)
        return self._drain()

    def on_tick(self, now_ms: int, *, caught_up: bool) -> list[Action]:
        """Time passes: a standby takes over if its primary is silent; emit a marker if the
        pending block has waited long enough."""
        actions: list[Action] = [*self.publication.on_tick(now_ms), *self._check_primary(now_ms)]
        height = self.cutter.pending_height
        late = 0 if self.publication.took_over else self.rank * self.takeover_ms
        wait = self.block_interval_ms + late
        if (
            not caught_up
            or self.diverged is not None
            or self._marker_for == height
            or not time_to_cut_due(now_ms, self.cutter.oldest_pending_ms, wait)
        ):
            return actions
        self._marker_for = height
        marker = TimeToCut(chain_id=self.chain_id, height=height, producer=self.operator.key_id)
        return [*actions, EmitMarker(height, marker.encode())]

    def on_published(self, height: int, publisher_key_id: bytes, block: bytes) -> list[Action]:
        """A copy of the final block ``height``, labelled as ``publisher_key_id``'s, was read
        (:meth:`Publication.on_copy`: bytes release a held height, a label is a hint; D47)."""
        self.publication.on_copy(height, publisher_key_id, block, self.final_height)
        return []

    # -- outputs -------------------------------------------------------------------------
    @property
    def final_height(self) -> int:
        """Highest height published (final, and matching this validator's execution)."""
        return self.final.final_height

    @property
    def rank(self) -> int:
        """This operator's rank in its institution (0 when it is none of its operators)."""
        kid = self.operator.key_id
        return self._own_ops.index(kid) if kid in self._own_ops else 0

    @property
    def publisher_rank(self) -> int:
        """This operator's place in the consortium's publication order (D47)."""
        return self.publication.rank

    @property
    def publishing(self) -> bool:
        """Whether final blocks are published at once (first in the order, or took over)."""
        return self.publication.publishing

    @property
    def cut_height(self) -> int:
        """Highest height cut and executed."""
        return self.machine.height

    def snapshot_meta(self, votes_position: int) -> SnapshotMeta:
        """Where to resume from if the process stopped now (``votes_position``: next offset
        the shell would read from the vote log)."""
        pending = [o for h, o in self.final.vote_offsets.items() if h > self.final_height]
        return SnapshotMeta(
            chain_id=self.chain_id,
            height=self.final_height,
            block_hash=self.final.final_hash,
            state_root=self.final.final_state.root,
            tx_offset=self.final.next_tx_offset,
            votes_offset=min([*pending, votes_position]),
        )

    # -- internals -----------------------------------------------------------------------
    def _handle(self, events: list[Event]) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            if isinstance(event, Divergence) and self.diverged is None:
                self.diverged = Diverged(event.height, event.own_hash, event.final_hash)
                actions.append(self.diverged)
            elif isinstance(event, Equivocation):
                self.counters.equivocations += 1
                if self.diverged is None:
                    evidence = self.evidence.report(event, self.machine.state)
                    actions += [evidence] if evidence is not None else []
            elif isinstance(event, Finalized):
                pass  # published in height order by _advance
        return actions + self._advance()

    def _advance(self) -> list[Action]:
        actions: list[Action] = []
        while self.diverged is None:
            height = self.final_height + 1
            final = self.tracker.final(height)
            executed = self.executed.get(height)
            if final is None or executed is None or final.block_hash != executed.block_hash:
                break
            actions += self.publication.on_final(executed, final, self.final_height)
            self.final.final_state.commit(executed.writes, height=height)
            self.final.final_height = height
            self.final.final_hash = executed.block_hash
            self.final.next_tx_offset = executed.header.last_offset + 1
            del self.executed[height]
            self.evidence.settle(height, self.tracker.first_votes(height))
            self.tracker.forget_below(height + 1)
            self.final.vote_offsets = {
                h: o for h, o in self.final.vote_offsets.items() if h > height
            }
        return actions

    @property
    def eager(self) -> bool:
        """Whether this standby took over from its silent (or feedless) primary."""
        return self.standby.eager

    @property
    def following(self) -> bool:
        """Whether this standby applies its primary's feeds of final blocks (D52)."""
        return self.rank > 0 and not self.standby.eager

    def _check_primary(self, now_ms: int) -> list[Action]:
        """A following standby behind for ``rank`` takeover delays may turn eager
        (:mod:`ledger.standby_follow`)."""
        stuck_to = self._final_top()
        self.standby.tick(
            now_ms,
            following=self.following,
            behind=bool(stuck_to) or self.standby.tx_end > self._cut_offset,
            stuck_to=stuck_to,
            delay_ms=self.rank * self.takeover_ms,
        )
        return self._drain()

    def _set_own_ops(self, validators: ValidatorSet) -> None:
        inst = validators.institution_of(self.operator.key_id)
        self._own_ops = tuple(sorted(validators.members[inst])) if inst is not None else ()
        self.publication.set_validators(validators)
