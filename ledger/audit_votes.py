"""The audit's check of the ``votes`` log (pure; part of :class:`ledger.audit.ChainAudit`).

Votes go through a :class:`~ledger.finality.FinalityTracker` fed the replayed validator sets:
equivocations are reported, a quorum on a hash that differs from the replay is an error, and
the canonical certificate must be the first quorum in vote order. Once the validator set of a
vote's height is known, a vote whose operator key id is a member's but whose signature does
not verify is an impostor (error), and a vote of a key that is no member's operator at that
height is reported (warning); the tracker ignores both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ledger.audit_findings import ERROR, WARNING, Findings
from ledger.errors import DecodeError
from ledger.finality import (
    Divergence,
    Equivocation,
    Event,
    FinalityTracker,
    Finalized,
    QuorumCertificate,
)
from ledger.members import ValidatorSet
from ledger.votes import Vote, decode_vote


class VoteAudit:
    """The votes of the heights above ``start_height``, checked as the replay reaches them."""

    def __init__(self, findings: Findings, topic: str, start_height: int) -> None:
        self.findings = findings
        self.topic = topic
        self.start_height = start_height
        self._tracker = FinalityTracker()
        self._final: dict[int, Finalized] = {}
        self._pending: dict[int, list[tuple[int, Vote]]] = {}

    def add(self, offset: int, raw: bytes, replayed_height: int) -> None:
        """A ``votes`` message (buffered by the tracker until its height's set is known)."""
        try:
            vote = decode_vote(raw)
        except DecodeError as exc:
            self.findings.report(
                "votes",
                "vote.malformed",
                WARNING,
                f"votes message at offset {offset} is not a BlockVote: {exc}",
                topic=self.topic,
                offset=offset,
            )
            return
        if vote.height <= self.start_height:
            return
        if vote.height > replayed_height:
            self._pending.setdefault(vote.height, []).append((offset, vote))
        self._on_events(self._tracker.add_vote(vote))

    def replayed(self, validators: ValidatorSet, height: int, block_hash: bytes) -> None:
        """Block ``height`` was replayed to ``block_hash`` under ``validators``."""
        self._check_members(validators)
        self._on_events(self._tracker.set_validators(validators))
        self._on_events(self._tracker.set_own_hash(height, block_hash))

    def committed(self, height: int) -> None:
        """Block ``height`` is committed: forget what no later check needs."""
        self._tracker.forget_below(height - 2)
        self._final.pop(height - 2, None)

    def check_first_quorum(
        self, height: int, certificate: QuorumCertificate, blocks_topic: str, offset: int
    ) -> None:
        """The canonical copy's ``certificate`` should be the first quorum of the vote log."""
        voted = self._final.get(height)
        if voted is not None and voted.certificate.record() != certificate.record():
            self.findings.report(
                "votes",
                "certificate.not_first_quorum",
                WARNING,
                f"block {height}: the published certificate is not the first quorum of "
                "the vote log",
                height=height,
                topic=blocks_topic,
                offset=offset,
            )

    def _check_members(self, validators: ValidatorSet) -> None:
        """Impostor and non-member votes of ``validators.height`` (the tracker ignores them)."""
        for offset, vote in self._pending.pop(validators.height, ()):
            inst = validators.institution_of(vote.operator_key_id)
            where: dict[str, Any] = {"height": vote.height, "topic": self.topic, "offset": offset}
            details = {"operator_key_id": vote.operator_key_id, "block_hash": vote.block_hash}
            if inst is None:
                self.findings.report(
                    "votes",
                    "vote.non_member",
                    WARNING,
                    f"vote at offset {offset} for height {vote.height} by key "
                    f"{vote.operator_key_id.hex()[:16]}, which is no member's operator there",
                    **where,
                    details={**details, "signature_valid": vote.is_valid()},
                )
            elif not vote.is_valid():
                self.findings.report(
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
                self._final[event.height] = event
            elif isinstance(event, Equivocation):
                self.findings.report(
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
                self.findings.report(
                    "votes",
                    "votes.quorum_on_other_hash",
                    ERROR,
                    f"a quorum voted for a block {event.height} that the replay does not compute",
                    height=event.height,
                    details={"replayed_hash": event.own_hash, "voted_hash": event.final_hash},
                )
