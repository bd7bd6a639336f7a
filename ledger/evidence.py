"""Equivocation evidence a validator reports (DESIGN.md 4.6), kept apart from its core.

Pure. Votes for heights that are already final are still compared with the first vote of
the same operator there, for the last :data:`EVIDENCE_WINDOW` heights, so an operator that
signs a second hash after finality is caught as well; each equivocation becomes one
``ReportEquivocation`` transaction signed by this validator's operator key, once.
"""

from __future__ import annotations

from ledger.finality import Equivocation
from ledger.keys import KeyPair
from ledger.members import key_key
from ledger.state import WorldState
from ledger.validator_actions import EVIDENCE_WINDOW, SubmitTx, evidence_tx
from ledger.votes import Vote


class EvidenceBook:
    """First votes of recent final heights, and the evidence already reported."""

    def __init__(self, operator: KeyPair, chain_id: str) -> None:
        self.operator = operator
        self.chain_id = chain_id
        self._settled: dict[int, dict[bytes, Vote]] = {}
        self._reported: set[tuple[int, bytes]] = set()
        self._nonce = -1

    def settle(self, height: int, first_votes: dict[bytes, Vote]) -> None:
        """``height`` became final with these first votes (by operator key id)."""
        self._settled[height] = first_votes
        self._settled.pop(height - EVIDENCE_WINDOW, None)

    def late_vote(self, vote: Vote, state: WorldState) -> Equivocation | None:
        """A vote for a final height: the equivocation it proves, if any (``state``: the
        validator's, to tell operators' keys, whose first late votes are kept, bounded)."""
        settled = self._settled.get(vote.height)
        if settled is None:
            return None  # older than the evidence window
        first = settled.get(vote.operator_key_id)
        if (first is not None and first.block_hash == vote.block_hash) or not vote.is_valid():
            return None
        if first is None:
            known = state.get(key_key(vote.operator_key_id))
            if known is not None and known["role"] == "OPERATOR":  # bounded: operators only
                settled[vote.operator_key_id] = vote
            return None
        return Equivocation(first=first, second=vote)

    def report(self, event: Equivocation, state: WorldState) -> SubmitTx | None:
        """The evidence transaction of ``event``, once per operator and height, while this
        validator's key is active in ``state``."""
        marker = (event.first.height, event.first.operator_key_id)
        if marker in self._reported:
            return None
        self._reported.add(marker)
        me = state.get(key_key(self.operator.key_id))
        if me is None or not me["active"]:
            return None
        self._nonce = max(int(me["next_nonce"]), self._nonce + 1)
        return evidence_tx(self.operator, self.chain_id, self._nonce, event)
