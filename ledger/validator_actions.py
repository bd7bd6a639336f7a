"""What :class:`ledger.validator_core.ValidatorCore` asks its shell to do, and its counters.

Pure (the shell, ``streams/validator.py``, carries the actions out)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.finality import Equivocation
from ledger.keys import KeyPair
from ledger.publication import PublishFinal
from ledger.tx import sign_tx


@dataclass(frozen=True, slots=True)
class SendVote:
    """Sign-off of ``block_hash`` at ``height``: the shell journals it, then produces it."""

    height: int
    block_hash: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class SendFeed:
    """A block this primary executed, for its institution's standbys (D52)."""

    height: int
    raw: bytes


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


Action = SendVote | SendFeed | PublishFinal | EmitMarker | SubmitTx | Diverged

EVIDENCE_WINDOW = 1000
"""Final heights whose first votes are kept to catch late equivocation."""


@dataclass(slots=True)
class Counters:
    """What the core saw, for metrics and status."""

    malformed_votes: int = 0
    equivocations: int = 0
    votes_seen: int = 0
    optimistic: int = 0  # blocks executed with vouched signatures that matched (D38)
    optimistic_misses: int = 0  # ... that did not, and were executed again
    applied: int = 0  # final blocks a following standby applied from its primary's feed (D52)
    feed_misses: int = 0  # feeds that did not give the final hash (the block was executed)


def evidence_tx(operator: KeyPair, chain_id: str, nonce: int, event: Equivocation) -> SubmitTx:
    """A ``ReportEquivocation`` transaction of ``event`` signed by ``operator``."""
    raw = sign_tx(
        operator,
        chain_id=chain_id,
        nonce=nonce,
        operation="ReportEquivocation",
        args={"vote_a": event.first.record(), "vote_b": event.second.record()},
    )
    who = event.first.operator_key_id.hex()[:12]
    return SubmitTx(raw, f"equivocation by operator {who} at height {event.first.height}")
