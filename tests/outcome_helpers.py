"""Hand-made certified blocks for the outcome tests: a FinalizedBlock whose certificate is
signed by chosen operator keys, for any validator set (the genesis one, a changed one, or an
attacker's)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger.blocks import BlockHeader, EntryResult, encode_finalized, tx_root
from ledger.finality import QuorumCertificate
from ledger.genesis import ConsortiumPlan, genesis_state
from ledger.keys import KeyPair
from ledger.members import ValidatorSet, validator_set
from ledger.results import ResultCode
from ledger.votes import sign_vote


def genesis_set(plan: ConsortiumPlan, height: int) -> ValidatorSet:
    """The genesis members restated for ``height``."""
    return validator_set(genesis_state(plan.genesis), height)


def operators(plan: ConsortiumPlan) -> list[KeyPair]:
    """The first operator key of each institution, in institution order."""
    return [plan.keys[inst][1][0] for inst in sorted(plan.keys)]


def results(*entries: tuple[bytes, int, ResultCode]) -> tuple[EntryResult, ...]:
    """Entry results from ``(tx_id, offset, code)``."""
    return tuple(EntryResult(tx_id=t, offset=o, code=c) for t, o, c in entries)


def header(height: int, entries: Sequence[EntryResult], validators: ValidatorSet) -> BlockHeader:
    """A header over ``entries`` naming ``validators``."""
    offsets = [r.offset for r in entries]
    return BlockHeader(
        height=height,
        prev_hash=hashlib.sha256(b"prev%d" % height).digest(),
        first_offset=min(offsets),
        last_offset=max(offsets),
        tx_root=tx_root(entries),
        state_root=hashlib.sha256(b"state%d" % height).digest(),
        validator_set_hash=validators.hash(),
        timestamp_ms=1_700_000_000_000 + height,
    )


def certified(
    height: int,
    entries: Sequence[EntryResult],
    validators: ValidatorSet,
    signers: Sequence[KeyPair],
    *,
    corrupt_signature: bool = False,
) -> bytes:
    """A FinalizedBlock of ``entries`` naming ``validators``, certified by ``signers``;
    ``corrupt_signature`` flips one bit of the first vote's signature."""
    head = header(height, entries, validators)
    votes = tuple(sign_vote(k, height=height, block_hash=head.hash()) for k in signers)
    cert = QuorumCertificate(height=height, block_hash=head.hash(), votes=votes)
    raw = encode_finalized(head, cert.record(), entries)
    if corrupt_signature:
        at = raw.find(votes[0].signature)
        raw = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]
    return raw
