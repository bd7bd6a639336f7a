"""The pure outcome verifier (ledger.outcomes): what a client may believe of a FinalizedBlock."""

from __future__ import annotations

import hashlib

import pytest

from ledger.errors import DecodeError, ProofError
from ledger.genesis import ConsortiumPlan
from ledger.keys import KeyPair
from ledger.members import ValidatorSet
from ledger.outcomes import CannotVerify, OutcomeVerifier, restate, trusted_signers
from ledger.results import ResultCode
from streams.receipts import Receipt, receipt_contradicts
from tests.outcome_helpers import certified, genesis_set, operators, results
from tests.unit.chain_helpers import consortium, key

TX = [hashlib.sha256(b"tx%d" % i).digest() for i in range(4)]
ENTRIES = results((TX[0], 10, ResultCode.OK), (TX[1], 11, ResultCode.FORBIDDEN))


def test_a_block_certified_by_the_genesis_members_yields_its_outcomes() -> None:
    plan = consortium(4)
    verifier = OutcomeVerifier(plan.genesis)
    raw = certified(7, ENTRIES, genesis_set(plan, 7), operators(plan)[:3])
    block = verifier.verify(raw)
    outcomes = block.outcomes()
    assert [(o.tx_id, o.height, o.offset, o.code) for o in outcomes] == [
        (TX[0], 7, 10, ResultCode.OK),
        (TX[1], 7, 11, ResultCode.FORBIDDEN),
    ]
    assert {o.block_hash for o in outcomes} == {block.header.hash()}
    assert verifier.adopted == 0


@pytest.mark.parametrize(
    "forgery",
    ["bad_signature", "too_few_votes", "outsider_keys", "two_votes_one_institution"],
)
def test_a_copy_without_a_valid_quorum_certificate_is_refused(forgery: str) -> None:
    plan = consortium(4)
    vs, ops = genesis_set(plan, 3), operators(plan)
    if forgery == "bad_signature":
        raw = certified(3, ENTRIES, vs, ops[:3], corrupt_signature=True)
    elif forgery == "too_few_votes":
        raw = certified(3, ENTRIES, vs, ops[:2])
    elif forgery == "outsider_keys":
        raw = certified(3, ENTRIES, vs, [key("x1"), key("x2"), key("x3")])
    else:
        raw = certified(3, ENTRIES, vs, [ops[0], ops[0], ops[1]])
    with pytest.raises(ProofError) as info:
        OutcomeVerifier(plan.genesis).verify(raw)
    assert not isinstance(info.value, CannotVerify)


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        OutcomeVerifier(consortium(4).genesis).verify(b"\xc3\x01not a block")


def test_an_attacker_set_cannot_certify_anything() -> None:
    """A block naming the attacker's own validator set, signed by the attacker's keys."""
    plan = consortium(4)
    fake_keys = [key(f"evil{i}") for i in range(4)]
    fake = ValidatorSet(
        height=5, members={f"inst-{i}": {k.key_id: k.public_key} for i, k in enumerate(fake_keys)}
    )
    raw = certified(5, ENTRIES, fake, fake_keys[:3])
    with pytest.raises(CannotVerify, match="no source of candidate sets"):
        OutcomeVerifier(plan.genesis).verify(raw)
    # a store that offers the attacker's set (its hash matches the forged header) does not
    # help: no member of the established set signed the header
    verifier = OutcomeVerifier(plan.genesis, candidates=lambda h: restate(fake, h))
    with pytest.raises(CannotVerify, match="0 institution"):
        verifier.verify(raw)
    assert verifier.adopted == 0


def _changed(plan_height: int, plan: ConsortiumPlan, newcomer: KeyPair) -> ValidatorSet:
    base = genesis_set(plan, plan_height)
    return ValidatorSet(
        height=plan_height,
        members={**base.members, "inst-9": {newcomer.key_id: newcomer.public_key}},
    )


def test_membership_change_followed_through_a_vouched_candidate() -> None:
    plan = consortium(4)
    newcomer = key("newcomer-op")
    changed = _changed(20, plan, newcomer)
    assert changed.quorum == 4
    ops = operators(plan)
    raw = certified(20, ENTRIES, changed, [*ops[:3], newcomer])
    with pytest.raises(CannotVerify):
        OutcomeVerifier(plan.genesis).verify(raw)  # no candidates: cannot, never "forged"
    wrong = OutcomeVerifier(plan.genesis, candidates=lambda h: genesis_set(plan, h))
    with pytest.raises(CannotVerify, match="hash differs"):
        wrong.verify(raw)  # a stale store: its set is not the one the header names

    asked: list[int] = []

    def source(height: int) -> ValidatorSet:
        asked.append(height)
        return _changed(height, plan, newcomer)

    verifier = OutcomeVerifier(plan.genesis, candidates=source)
    assert verifier.verify(raw).height == 20 and verifier.adopted == 1
    # later blocks of the changed set verify without asking again
    later = certified(21, ENTRIES, _changed(21, plan, newcomer), [ops[0], ops[1], ops[3], newcomer])
    assert verifier.verify(later).height == 21
    assert asked == [20]
    # and the genesis set still verifies older heights
    assert verifier.verify(certified(2, ENTRIES, genesis_set(plan, 2), ops[1:])).height == 2


def _grown(plan: ConsortiumPlan, newcomers: list[KeyPair], height: int) -> ValidatorSet:
    members = dict(genesis_set(plan, height).members)
    for i, k in enumerate(newcomers):
        members[f"new-{i}"] = {k.key_id: k.public_key}
    return ValidatorSet(height=height, members=members)


def test_a_candidate_needs_more_than_n_minus_q_established_signers() -> None:
    plan = consortium(4)  # n = 4, q = 3: at most one faulty, so two established signers
    ops = operators(plan)
    newcomers = [key(f"new{i}") for i in range(6)]
    grown = _grown(plan, newcomers, 30)  # n = 10, q = 7
    one_old = certified(30, ENTRIES, grown, [ops[0], *newcomers])
    verifier = OutcomeVerifier(plan.genesis, candidates=lambda h: restate(grown, h))
    with pytest.raises(CannotVerify, match="only 1 institution"):
        verifier.verify(one_old)  # the certificate itself is valid for the candidate
    two_old = certified(30, ENTRIES, grown, [ops[0], ops[2], *newcomers[:5]])
    assert verifier.verify(two_old).height == 30 and verifier.adopted == 1


def test_trusted_signers_counts_valid_votes_of_distinct_established_institutions() -> None:
    plan = consortium(4)
    vs, ops = genesis_set(plan, 4), operators(plan)
    block = OutcomeVerifier(plan.genesis).verify(certified(4, ENTRIES, vs, ops[:3]))
    assert trusted_signers(block.certificate, vs) == 3
    assert trusted_signers(block.certificate, ValidatorSet(height=4, members={})) == 0


def test_receipt_contradiction_rule() -> None:
    certified_ = Receipt(
        tx_id=TX[0], height=5, offset=10, code=ResultCode.OK, block_hash=b"\x01" * 32
    )
    same = Receipt(**{f: getattr(certified_, f) for f in Receipt.__slots__})
    assert not receipt_contradicts(same, certified_)
    forged = Receipt(
        tx_id=TX[0], height=1_000_000, offset=10, code=ResultCode.FORBIDDEN, block_hash=b"\x02" * 32
    )
    assert receipt_contradicts(forged, certified_)
    replay = Receipt(
        tx_id=TX[0], height=9, offset=40, code=ResultCode.BAD_NONCE, block_hash=b"\x03" * 32
    )
    assert not receipt_contradicts(replay, certified_)  # a later replay of the envelope
    later_ok = Receipt(
        tx_id=TX[0], height=9, offset=40, code=ResultCode.OK, block_hash=b"\x03" * 32
    )
    assert receipt_contradicts(later_ok, certified_)
