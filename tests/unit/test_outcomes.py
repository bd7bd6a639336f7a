"""The pure outcome verifier (ledger.outcomes): what a client may believe of a FinalizedBlock."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import outcomes
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


def test_the_long_range_attack_old_members_cannot_certify_for_a_grown_set() -> None:
    """Security review: 4 members (q = 3) grow to 10 (q = 7) at height 30; three original
    members (within the new set's n - q = 3 faulty) sign a height-31 block naming the genesis
    set, with a FORBIDDEN outcome the watcher would keep as the first copy of 31."""
    plan = consortium(4)
    ops = operators(plan)
    newcomers = [key(f"new{i}") for i in range(6)]
    verifier = OutcomeVerifier(plan.genesis, candidates=lambda h: _grown(plan, newcomers, h))
    vouched = certified(30, ENTRIES, _grown(plan, newcomers, 30), [ops[0], ops[2], *newcomers[:5]])
    assert verifier.verify(vouched).height == 30 and verifier.adopted == 1
    lie = results((TX[0], 10, ResultCode.FORBIDDEN))
    forged = certified(31, lie, genesis_set(plan, 31), ops[:3])
    with pytest.raises(CannotVerify, match="hash differs"):
        verifier.verify(forged)
    # a tampered store offering the genesis set does not help: 3 of the 10 are not enough
    lying = OutcomeVerifier(plan.genesis, candidates=lambda h: _grown(plan, newcomers, h))
    lying.verify(vouched)
    lying.candidates = lambda h: genesis_set(plan, h)
    with pytest.raises(CannotVerify, match="only 3 institution"):
        lying.verify(forged)
    assert [vs.height for vs in lying.established] == [1, 30]
    # the genesis set keeps verifying the heights of its window, out of order too
    assert verifier.verify(certified(29, ENTRIES, genesis_set(plan, 29), ops[1:])).height == 29


def _rotated(plan: ConsortiumPlan, new_keys: Mapping[str, KeyPair], height: int) -> ValidatorSet:
    members = dict(genesis_set(plan, height).members)
    for inst, k in new_keys.items():
        members[inst] = {k.key_id: k.public_key}
    return ValidatorSet(height=height, members=members)


def test_rotated_out_operator_keys_cannot_certify_after_the_rotation() -> None:
    plan = consortium(4)
    ops = operators(plan)
    fresh = {"inst-0": key("inst-0/op0'"), "inst-1": key("inst-1/op0'")}
    verifier = OutcomeVerifier(plan.genesis, candidates=lambda h: _rotated(plan, fresh, h))
    rotation = certified(20, ENTRIES, _rotated(plan, fresh, 20), [fresh["inst-0"], *ops[2:]])
    assert verifier.verify(rotation).height == 20
    # the two rotated-out keys (leaked) and one faulty member: a quorum of the genesis set
    forged = certified(25, ENTRIES, genesis_set(plan, 25), ops[:3])
    with pytest.raises(CannotVerify):
        verifier.verify(forged)
    assert verifier.verify(certified(19, ENTRIES, genesis_set(plan, 19), ops[:3])).height == 19


def test_a_change_learned_at_a_later_height_moves_down_to_an_earlier_one() -> None:
    """Out of order: the change is established at 30, then a block of 27 names the new set
    (the change really happened at 27); no source is asked, the genesis window ends at 27."""
    plan = consortium(4)
    ops = operators(plan)
    newcomers = [key(f"new{i}") for i in range(6)]
    asked: list[int] = []

    def source(height: int) -> ValidatorSet:
        asked.append(height)
        return _grown(plan, newcomers, height)

    verifier = OutcomeVerifier(plan.genesis, candidates=source)
    signers = [ops[0], ops[2], *newcomers[:5]]
    verifier.verify(certified(30, ENTRIES, _grown(plan, newcomers, 30), signers))
    assert (
        verifier.verify(certified(27, ENTRIES, _grown(plan, newcomers, 27), signers)).height == 27
    )
    assert asked == [30] and verifier.adopted == 1
    assert [vs.height for vs in verifier.established] == [1, 27]
    with pytest.raises(CannotVerify):  # 28 now lies in the grown set's window
        verifier.verify(certified(28, ENTRIES, genesis_set(plan, 28), ops[:3]))
    # the move is vouched for like any candidate: the genesis must sign it
    newcomers_only = certified(26, ENTRIES, _grown(plan, newcomers, 26), [ops[0], *newcomers])
    with pytest.raises(CannotVerify, match="only 1 institution"):
        verifier.verify(newcomers_only)


def test_a_block_beyond_a_change_not_yet_established_is_unverifiable() -> None:
    """The header names the new set: without the chain of trust to it, no outcome, and never
    an older set instead."""
    plan = consortium(4)
    ops = operators(plan)
    newcomers = [key(f"new{i}") for i in range(6)]
    beyond = certified(40, ENTRIES, _grown(plan, newcomers, 40), [ops[0], ops[2], *newcomers[:5]])
    verifier = OutcomeVerifier(plan.genesis)
    with pytest.raises(CannotVerify, match="no source"):
        verifier.verify(beyond)
    assert [vs.height for vs in verifier.established] == [1]
    verifier.candidates = lambda h: _grown(plan, newcomers, h)
    assert verifier.verify(beyond).height == 40
    with pytest.raises(CannotVerify, match="another set"):  # a second set for height 40
        verifier.verify(certified(40, ENTRIES, genesis_set(plan, 40), ops[:3]))


def test_an_earlier_change_rechecks_the_chain_of_trust_of_later_ones() -> None:
    plan = consortium(4)
    ops = operators(plan)
    newcomers = [key(f"new{i}") for i in range(6)]
    grown = [ops[0], ops[2], *newcomers[1:]]  # of the old members, inst-0 and inst-2
    # an earlier change the later one is vouched for by (inst-0, inst-2 and newcomer 0 stay)
    kept = ValidatorSet(
        height=20,
        members={**genesis_set(plan, 20).members, **_grown(plan, newcomers[:1], 20).members},
    )
    sets = {20: kept}

    def source(height: int) -> ValidatorSet:
        return restate(sets.get(height, _grown(plan, newcomers, height)), height)

    verifier = OutcomeVerifier(plan.genesis, candidates=source)
    verifier.verify(certified(50, ENTRIES, _grown(plan, newcomers, 50), grown))
    verifier.verify(certified(20, ENTRIES, kept, [*ops, newcomers[0]][:4]))
    assert [vs.height for vs in verifier.established] == [1, 20, 50]
    # an earlier change to a set that has neither inst-0 nor inst-2: the grown set, vouched
    # for by the genesis beyond the genesis' (new) window, is forgotten
    other = ValidatorSet(
        height=10,
        members={
            "inst-1": {ops[1].key_id: ops[1].public_key},
            "inst-3": {ops[3].key_id: ops[3].public_key},
            "new-0": {newcomers[0].key_id: newcomers[0].public_key},
        },
    )
    sets[10] = other
    fresh = OutcomeVerifier(plan.genesis, candidates=source)
    fresh.verify(certified(50, ENTRIES, _grown(plan, newcomers, 50), grown))
    fresh.verify(certified(10, ENTRIES, other, [ops[1], ops[3], newcomers[0]]))
    assert [vs.height for vs in fresh.established] == [1, 10]
    with pytest.raises(CannotVerify, match="only 0 institution"):
        fresh.verify(certified(51, ENTRIES, _grown(plan, newcomers, 51), grown))


def test_forgotten_windows_are_not_left_to_the_genesis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outcomes, "MAX_ESTABLISHED", 2)
    plan = consortium(4)
    ops = operators(plan)
    newcomers = [key(f"new{i}") for i in range(6)]
    verifier = OutcomeVerifier(plan.genesis, candidates=lambda h: _grown(plan, newcomers, h))
    verifier.verify(
        certified(30, ENTRIES, _grown(plan, newcomers, 30), [ops[0], ops[2], *newcomers[:5]])
    )
    assert len(verifier.established) == 2
    shrunk = _grown(plan, newcomers[:5], 40)  # newcomer 5 leaves: n = 9, q = 7
    verifier.candidates = lambda h: restate(shrunk, h)
    verifier.verify(certified(40, ENTRIES, shrunk, [*ops[:2], *newcomers[:5]]))
    assert [vs.height for vs in verifier.established] == [30, 40]
    with pytest.raises(CannotVerify, match="no longer remembered"):
        verifier.verify(certified(5, ENTRIES, genesis_set(plan, 5), ops[:3]))


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


Members = dict[str, KeyPair]


def _vs(members: Members, height: int) -> ValidatorSet:
    return ValidatorSet(
        height=height, members={i: {k.key_id: k.public_key} for i, k in members.items()}
    )


def _history(rng: random.Random, plan: ConsortiumPlan) -> list[tuple[int, Members]]:
    """Epochs (start height, members) from the genesis: each change adds, removes or rotates
    the key of one institution; no member set repeats."""
    genesis = dict(zip(sorted(plan.keys), operators(plan), strict=True))
    epochs: list[tuple[int, Members]] = [(1, genesis)]
    seen = {frozenset((i, k.key_id) for i, k in epochs[0][1].items())}
    count = rng.randint(2, 5)
    while len(epochs) < count:
        start, members = epochs[-1]
        members = dict(members)
        change = rng.choice(["add", "remove", "rotate"])
        if change == "add" and len(members) < 7:
            inst = f"new-{start}"
            members[inst] = key(f"{inst}/{rng.random()}")
        elif change == "remove" and len(members) > 4:
            del members[rng.choice(sorted(members))]
        else:
            inst = rng.choice(sorted(members))
            members[inst] = key(f"{inst}/{rng.random()}")
        ident = frozenset((i, k.key_id) for i, k in members.items())
        if ident not in seen:
            seen.add(ident)
            epochs.append((start + rng.randint(1, 5), members))
    return epochs


def _epoch(epochs: list[tuple[int, Members]], height: int) -> int:
    return max(i for i, (start, _) in enumerate(epochs) if start <= height)


def _honest(epochs: list[tuple[int, Members]], height: int) -> bytes:
    t = _epoch(epochs, height)
    members, before = epochs[t][1], epochs[max(t - 1, 0)][1]
    # those the previous set knows by the same key first: they vouch for a change
    order = sorted(members, key=lambda i: (before.get(i) != members[i], i))
    signers = [members[i] for i in order[: _vs(members, height).quorum]]
    return certified(height, ENTRIES, _vs(members, height), signers)


def _forged(rng: random.Random, epochs: list[tuple[int, Members]], height: int) -> bytes | None:
    """A block of ``height`` naming another epoch's set, signed only by what the fault model
    lets an attacker hold: keys that are not keys of the true set at ``height`` (removed
    members, rotated-out keys), and at most ``n - q`` keys of that set."""
    t = _epoch(epochs, height)
    j = rng.choice([i for i in range(len(epochs)) if i != t])
    true, named = _vs(epochs[t][1], height), epochs[j][1]
    outside = [k for k in named.values() if true.institution_of(k.key_id) is None]
    inside = [k for k in named.values() if true.institution_of(k.key_id) is not None]
    signers = outside + inside[: true.size - true.quorum]
    need = _vs(named, height).quorum
    if len(signers) < need:
        return None
    lie = results((TX[2], 1, ResultCode.FORBIDDEN))
    return certified(height, lie, _vs(named, height), signers[:need])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), ordered=st.booleans(), lying=st.booleans())
def test_property_no_outcome_from_a_set_outside_its_window(
    seed: int, ordered: bool, lying: bool
) -> None:
    """In height order with an honest source: every honest block verifies, no forgery does,
    and the established windows are the true epochs. In any order, with a lying source too:
    a forgery verifies only where the verifier's window is stale (a change not yet learned,
    the light-client assumption), and an honest block never fails as forged."""
    rng = random.Random(seed)
    plan = consortium(4)
    epochs = _history(rng, plan)
    top = epochs[-1][0] + 2
    blocks: list[tuple[int, bool, bytes]] = []
    for height in range(1, top + 1):
        blocks.append((height, True, _honest(epochs, height)))
        for _ in range(2):
            at = rng.randint(1, height)
            forged = _forged(rng, epochs, at)
            if forged is not None:
                blocks.append((at, False, forged))
    if lying:
        ordered = False
    else:
        lying = False
    if not ordered:
        rng.shuffle(blocks)

    def source(height: int) -> ValidatorSet:
        pick = rng.randrange(len(epochs)) if lying else _epoch(epochs, height)
        return _vs(epochs[pick][1], height)

    verifier = OutcomeVerifier(plan.genesis, candidates=source)
    for height, honest, raw in blocks:
        window = verifier.window(height)
        current = window is not None and dict(window.members) == dict(
            _vs(epochs[_epoch(epochs, height)][1], height).members
        )
        try:
            verifier.verify(raw)
        except CannotVerify:
            assert not (ordered and honest)
            continue
        except ProofError:
            assert not honest
            continue
        assert honest or not current, f"a forgery of {height} verified against its true set"
        assert honest or not ordered
    if ordered:
        truth = [(start, _vs(m, start).members) for start, m in epochs]
        assert [(vs.height, dict(vs.members)) for vs in verifier.established] == [
            (s, dict(m)) for s, m in truth
        ]
