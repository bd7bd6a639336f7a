"""Finality: quorum over institutions, deterministic certificates, evidence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import ProofError
from ledger.finality import (
    Divergence,
    Equivocation,
    FinalityTracker,
    Finalized,
    certify,
    verify_certificate,
)
from ledger.keys import KeyPair
from ledger.members import ValidatorSet, quorum
from ledger.votes import Vote, decode_vote, sign_vote, votes_valid
from tests.unit.chain_helpers import key

H1, H2 = b"\x01" * 32, b"\x02" * 32


def vset(n: int, ops: int = 2, height: int = 5) -> tuple[ValidatorSet, dict[str, list[KeyPair]]]:
    keys = {f"i{i}": [key(f"i{i}/op{j}") for j in range(ops)] for i in range(n)}
    members = {inst: {k.key_id: k.public_key for k in pairs} for inst, pairs in keys.items()}
    return ValidatorSet(height=height, members=members), keys


def test_quorum_formula() -> None:
    assert [quorum(n) for n in range(1, 8)] == [1, 2, 3, 3, 4, 5, 5]


def test_certificate_is_first_q_distinct_institutions() -> None:
    validators, keys = vset(4)
    votes = [
        sign_vote(keys["i0"][0], height=5, block_hash=H1),
        sign_vote(keys["i0"][1], height=5, block_hash=H1),  # same institution
        sign_vote(keys["i1"][0], height=5, block_hash=H2),
        sign_vote(keys["i2"][1], height=5, block_hash=H1),
        sign_vote(keys["i3"][0], height=5, block_hash=H1),
        sign_vote(keys["i1"][1], height=5, block_hash=H1),
    ]
    final = certify(votes, validators)
    assert final is not None and final.block_hash == H1
    assert final.certificate.votes == (votes[0], votes[3], votes[4])
    verify_certificate(final.certificate, validators, H1)
    with pytest.raises(ProofError):
        verify_certificate(final.certificate, validators, H2)


def test_votes_buffered_until_validator_set_known_and_divergence() -> None:
    validators, keys = vset(3)
    tracker = FinalityTracker()
    for inst in ["i0", "i1"]:
        assert tracker.add_vote(sign_vote(keys[inst][0], height=5, block_hash=H1)) == []
    assert tracker.set_own_hash(5, H2) == []
    assert tracker.set_validators(validators) == []
    events = tracker.add_vote(sign_vote(keys["i2"][0], height=5, block_hash=H1))
    assert isinstance(events[0], Finalized) and events[1] == Divergence(
        height=5, own_hash=H2, final_hash=H1
    )
    assert tracker.final(5) == events[0]
    tracker.forget_below(6)
    assert tracker.final(5) is None


def test_equivocation_detected_once_and_not_counted() -> None:
    validators, keys = vset(4)
    tracker = FinalityTracker()
    tracker.set_validators(validators)
    op = keys["i0"][0]
    a, b = sign_vote(op, height=5, block_hash=H1), sign_vote(op, height=5, block_hash=H2)
    assert tracker.add_vote(a) == []
    events = tracker.add_vote(b)
    assert events == [Equivocation(first=a, second=b)]
    assert tracker.add_vote(sign_vote(op, height=5, block_hash=H2)) == []


def test_invalid_and_foreign_votes_are_ignored() -> None:
    validators, keys = vset(1)
    outsider = sign_vote(key("outsider"), height=5, block_hash=H1)
    good = sign_vote(keys["i0"][0], height=5, block_hash=H1)
    forged = Vote(
        height=5,
        block_hash=H2,
        operator_key_id=good.operator_key_id,
        public_key=good.public_key,
        signature=good.signature,
    )
    assert certify([outsider, forged], validators) is None
    final = certify([outsider, forged, good], validators)
    assert final is not None
    assert decode_vote(good.encode()) == good


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=1, max_value=7), st.data())
def test_quorum_never_reached_with_fewer_than_q_institutions(n: int, data: st.DataObject) -> None:
    validators, keys = vset(n, ops=3)
    q = validators.quorum
    voting = data.draw(st.lists(st.sampled_from(sorted(keys)), unique=True, max_size=q - 1))
    # Every operator of the voting institutions may vote, for either hash, repeatedly, in any
    # order; outsiders and forged signatures are mixed in.
    pool = [
        sign_vote(k, height=5, block_hash=h)
        for inst in voting
        for k in keys[inst]
        for h in (H1, H2)
    ]
    pool += [sign_vote(key(f"outsider{i}"), height=5, block_hash=H1) for i in range(3)]
    real = sign_vote(keys[sorted(keys)[0]][0], height=5, block_hash=H1)
    pool.append(
        Vote(
            height=5,
            block_hash=H2,
            operator_key_id=real.operator_key_id,
            public_key=real.public_key,
            signature=real.signature,
        )
    )
    order = data.draw(st.lists(st.sampled_from(pool), max_size=40))
    tracker = FinalityTracker()
    tracker.set_validators(validators)
    for vote in order:
        tracker.add_vote(vote)
    assert tracker.final(5) is None
    # Whatever the rest do, a certificate always holds q votes of distinct institutions.
    for inst in sorted(keys):
        for op in keys[inst]:
            tracker.add_vote(sign_vote(op, height=5, block_hash=H1))
    final = tracker.final(5)
    if final is not None:
        institutions = {
            validators.institution_of(v.operator_key_id) for v in final.certificate.votes
        }
        assert len(final.certificate.votes) == q == len(institutions)
        verify_certificate(final.certificate, validators, H1)


def test_votes_valid_is_is_valid_of_each_vote_in_one_batch() -> None:
    """The batch check of a certificate's votes answers as ``Vote.is_valid`` one by one: a
    good vote, one with a flipped signature, one whose key is not the named operator's."""
    a, b = key("op-a"), key("op-b")
    good = sign_vote(a, height=3, block_hash=b"\x01" * 32)
    other = sign_vote(b, height=3, block_hash=b"\x02" * 32)
    bad_signature = good.signature[:-1] + bytes([good.signature[-1] ^ 1])
    flipped = Vote(
        height=3,
        block_hash=b"\x01" * 32,
        operator_key_id=a.key_id,
        public_key=a.public_key,
        signature=bad_signature,
    )
    impostor = Vote(
        height=3,
        block_hash=b"\x02" * 32,
        operator_key_id=a.key_id,
        public_key=b.public_key,
        signature=other.signature,
    )
    votes = [good, flipped, other, impostor, good]
    assert votes_valid(votes) == [v.is_valid() for v in votes] == [True, False, True, False, True]
    assert votes_valid([]) == []
