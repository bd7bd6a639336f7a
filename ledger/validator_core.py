"""The validator as a pure state machine: log messages in, actions out (sans-I/O).

Theory of operation
-------------------
* The shell (``streams/validator.py``) feeds the two logs in their own order:
  :meth:`ValidatorCore.on_tx` for every ``pantheon.tx`` message and
  :meth:`ValidatorCore.on_vote` for every ``pantheon.votes`` message, and calls
  :meth:`ValidatorCore.on_tick` with the current time. Each returns the actions the shell
  must carry out (send a vote, publish a final block and its receipts, emit a marker, submit
  evidence); the core never touches a socket, a file or a clock.
* Cutting and executing run ahead of finality (pipelining): block ``h`` is cut, executed on
  the state after ``h-1`` as this validator computed it, committed to the *speculative*
  machine, and voted on at once, whether or not ``h-1`` is final yet.
* A block is published when it is final (the finality tracker's quorum certificate) *and*
  this validator's own execution of that height produced the same hash. Publication happens
  in height order, and only then is the block's write set applied to the *final* state, the
  one snapshots are taken from. So a snapshot is always of a state the quorum signed.
* A validator votes at ``h`` only if its operator is in the validator set of ``h`` and ``h``
  is not final yet (a replaying validator does not vote on history). After a divergence (its
  hash differs from the final one) it never votes again; the shell stops it.
* A marker ``TimeToCut(h)`` is due when the pending block's oldest entry has waited longer
  than the block interval (:func:`ledger.cutter.time_to_cut_due`), the validator has read the
  whole tx log (it is not replaying), and it has not emitted one for ``h`` already.
* Equivocation evidence found in the vote log becomes a ``ReportEquivocation`` transaction
  signed by this operator's key. Votes for heights that are already final are still compared
  with the first vote of the same operator there, for the last :data:`EVIDENCE_WINDOW`
  heights, so an operator that signs a second hash after finality is caught as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.blocks import block_receipts, encode_finalized
from ledger.cutter import Cutter, TimeToCut, time_to_cut_due
from ledger.errors import DecodeError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.finality import Divergence, Equivocation, Event, FinalityTracker, Finalized
from ledger.keys import KeyPair
from ledger.members import key_key
from ledger.results import ResultCode
from ledger.snapshot import SnapshotMeta
from ledger.state import WorldState
from ledger.tx import sign_tx
from ledger.votes import Vote, decode_vote, sign_vote


@dataclass(frozen=True, slots=True)
class SendVote:
    """Sign-off of ``block_hash`` at ``height``: the shell journals it, then produces it."""

    height: int
    block_hash: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class PublishFinal:
    """A final block (FinalizedBlock bytes) and its receipts ``(tx_id, Receipt bytes)``."""

    height: int
    block: bytes
    receipts: tuple[tuple[bytes, bytes], ...]
    codes: tuple[ResultCode, ...]
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class EmitMarker:
    """A ``TimeToCut`` marker for the pending height."""

    height: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class SubmitTx:
    """A transaction this validator signed (equivocation evidence)."""

    raw: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Diverged:
    """This validator's hash of ``height`` is not the final one: it must stop."""

    height: int
    own_hash: bytes
    final_hash: bytes


Action = SendVote | PublishFinal | EmitMarker | SubmitTx | Diverged

EVIDENCE_WINDOW = 1000
"""Final heights whose first votes are kept to catch late equivocation."""


@dataclass(slots=True)
class Counters:
    """What the core saw, for metrics and status."""

    malformed_votes: int = 0
    equivocations: int = 0
    votes_seen: int = 0


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
        self.cutter = Cutter(
            chain_id=params.chain_id,
            next_height=machine.height + 1,
            max_block_txs=params.max_block_txs,
            max_block_bytes=params.max_block_bytes,
        )
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
        self._settled: dict[int, dict[bytes, Vote]] = {}
        self._reported: set[tuple[int, bytes]] = set()
        self._evidence_nonce = -1
        self._vouched: set[bytes] = set()  # pending envelopes whose signature the shell vouched for

    # -- inputs --------------------------------------------------------------------------
    def on_tx(
        self, offset: int, timestamp_ms: int, raw: bytes, *, signature_verified: bool = False
    ) -> list[Action]:
        """The next message of ``pantheon.tx``.

        ``signature_verified``: the shell vouches that :func:`ledger.tx.signature_verifies`
        holds for ``raw`` (its worker processes checked it); execution then skips only that
        verify call (:func:`ledger.execution.execute_block`).
        """
        if signature_verified:
            self._vouched.add(raw)
        block = self.cutter.feed(offset, timestamp_ms, raw)
        if block is None:
            return []
        executed = self.machine.execute(block, verified_signatures=self._vouched)
        for entry in block.entries:
            self._vouched.discard(entry.raw)
        if len(self._vouched) > 2 * self.machine.params.max_block_txs:  # never unbounded (it only
            self._vouched.clear()  # saves verify calls)
        self.machine.commit(executed)
        height = block.height
        self.executed[height] = executed
        events = self.tracker.set_validators(executed.validator_set)
        events += self.tracker.set_own_hash(height, executed.block_hash)
        actions: list[Action] = []
        if (
            self.diverged is None
            and executed.validator_set.institution_of(self.operator.key_id) is not None
            and self.tracker.final(height) is None
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
            return self._late_vote(vote)
        self.final.vote_offsets.setdefault(vote.height, offset)
        return self._handle(self.tracker.add_vote(vote))

    def on_tick(self, now_ms: int, *, caught_up: bool) -> list[Action]:
        """Time passes: emit a marker if the pending block has waited long enough."""
        height = self.cutter.pending_height
        if (
            not caught_up
            or self.diverged is not None
            or self._marker_for == height
            or not time_to_cut_due(now_ms, self.cutter.oldest_pending_ms, self.block_interval_ms)
        ):
            return []
        self._marker_for = height
        marker = TimeToCut(chain_id=self.chain_id, height=height, producer=self.operator.key_id)
        return [EmitMarker(height, marker.encode())]

    # -- outputs -------------------------------------------------------------------------
    @property
    def final_height(self) -> int:
        """Highest height published (final, and matching this validator's execution)."""
        return self.final.final_height

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
                evidence = self._evidence(event)
                if evidence is not None:
                    actions.append(evidence)
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
            actions.append(self._publish(executed, final))
            self.final.final_state.commit(executed.writes, height=height)
            self.final.final_height = height
            self.final.final_hash = executed.block_hash
            self.final.next_tx_offset = executed.header.last_offset + 1
            del self.executed[height]
            self._settled[height] = self.tracker.first_votes(height)
            self._settled.pop(height - EVIDENCE_WINDOW, None)
            self.tracker.forget_below(height + 1)
            self.final.vote_offsets = {
                h: o for h, o in self.final.vote_offsets.items() if h > height
            }
        return actions

    @staticmethod
    def _publish(executed: ExecutedBlock, final: Finalized) -> PublishFinal:
        header = executed.header
        block_hash = executed.block_hash
        return PublishFinal(
            height=header.height,
            block=encode_finalized(header, final.certificate.record(), executed.results),
            receipts=tuple(
                zip(
                    (r.tx_id for r in executed.results),
                    block_receipts(executed.results, height=header.height, block_hash=block_hash),
                    strict=True,
                )
            ),
            codes=tuple(r.code for r in executed.results),
            timestamp_ms=header.timestamp_ms,
        )

    def _late_vote(self, vote: Vote) -> list[Action]:
        """A vote for a final height: only evidence can come of it."""
        settled = self._settled.get(vote.height)
        if settled is None:
            return []  # older than the evidence window
        first = settled.get(vote.operator_key_id)
        if (first is not None and first.block_hash == vote.block_hash) or not vote.is_valid():
            return []
        if first is None:
            known = self.machine.state.get(key_key(vote.operator_key_id))
            if known is not None and known["role"] == "OPERATOR":  # bounded: operators only
                settled[vote.operator_key_id] = vote
            return []
        return self._handle([Equivocation(first=first, second=vote)])

    def _evidence(self, event: Equivocation) -> SubmitTx | None:
        marker = (event.first.height, event.first.operator_key_id)
        if self.diverged is not None or marker in self._reported:
            return None
        self._reported.add(marker)
        me = self.machine.state.get(key_key(self.operator.key_id))
        if me is None or not me["active"]:
            return None
        nonce = max(int(me["next_nonce"]), self._evidence_nonce + 1)
        self._evidence_nonce = nonce
        raw = sign_tx(
            self.operator,
            chain_id=self.chain_id,
            nonce=nonce,
            operation="ReportEquivocation",
            args={"vote_a": event.first.record(), "vote_b": event.second.record()},
        )
        who = event.first.operator_key_id.hex()[:12]
        return SubmitTx(raw, f"equivocation by operator {who} at height {event.first.height}")
