"""Scenario, no broker: admit a fifth institution, vote one out, catch an equivocator."""

from __future__ import annotations

from ledger.execution import ExecutedBlock
from ledger.finality import Equivocation, FinalityTracker, Finalized, verify_certificate
from ledger.key_proofs import propose_member_args
from ledger.keys import KeyPair
from ledger.members import member_ids
from ledger.votes import Vote, sign_vote
from tests.unit.chain_helpers import CHAIN, Driver, consortium, key

ANCHOR = {"sha256": bytes(32), "metadata": "{}"}


def votes_for(block: ExecutedBlock, operators: list[KeyPair]) -> list[Vote]:
    return [
        sign_vote(op, height=block.header.height, block_hash=block.block_hash) for op in operators
    ]


def feed(tracker: FinalityTracker, votes: list[Vote]) -> list[object]:
    events: list[object] = []
    for vote in votes:
        events.extend(tracker.add_vote(vote))
    return events


def test_consortium_lifecycle() -> None:
    d = Driver(consortium(4))
    tracker = FinalityTracker()
    op = {inst: d.plan.keys[inst][1][0] for inst in d.plan.keys}
    gov = {inst: d.gov(inst) for inst in d.plan.keys}
    new_gov, new_op = key("inst-new/gov"), key("inst-new/op")

    # Block 1: inst-0 proposes inst-new with its operator key.
    b1 = d.block(
        [
            d.tx(
                gov["inst-0"],
                "ProposeMember",
                propose_member_args(new_gov, [new_op], chain_id=CHAIN, institution_id="inst-new"),
            )
        ]
    )
    assert b1.results[0].code.name == "OK"
    proposal = {"proposal_id": b1.results[0].tx_id, "approve": True}
    tracker.set_validators(b1.validator_set)
    assert isinstance(
        feed(tracker, votes_for(b1, [op["inst-0"], op["inst-1"], op["inst-2"]]))[-1], Finalized
    )

    # Block 2: two more yes votes pass it (3 of 4 > 2/3); the newcomer's own transaction in
    # the same block is refused: membership takes effect from the next block.
    b2 = d.block(
        [
            d.tx(gov["inst-1"], "CastVote", proposal),
            d.tx(gov["inst-2"], "CastVote", proposal),
            d.tx(new_gov, "AnchorData", {"data_id": "early", **ANCHOR}),
        ]
    )
    assert [r.code.name for r in b2.results] == ["OK", "OK", "INACTIVE_SENDER"]
    assert b2.validator_set.size == 4
    tracker.set_validators(b2.validator_set)
    assert feed(tracker, votes_for(b2, [new_op])) == []  # not a validator of height 2 yet
    assert isinstance(
        feed(tracker, votes_for(b2, [op["inst-1"], op["inst-2"], op["inst-3"]]))[-1], Finalized
    )

    # Block 3: five members, q = 4; the newcomer's operator vote is needed and counts.
    b3 = d.block([d.tx(new_gov, "AnchorData", {"data_id": "welcome", **ANCHOR}, nonce=0)])
    assert b3.results[0].code.name == "OK"
    assert b3.validator_set.size == 5 and b3.validator_set.quorum == 4
    tracker.set_validators(b3.validator_set)
    assert feed(tracker, votes_for(b3, [op["inst-1"], op["inst-2"], op["inst-3"]])) == []
    events = feed(tracker, votes_for(b3, [new_op]))
    assert isinstance(events[-1], Finalized)
    assert events[-1].certificate.votes[-1].operator_key_id == new_op.key_id
    verify_certificate(events[-1].certificate, b3.validator_set, b3.block_hash)

    # Block 4: inst-3 is voted out (4 of 5 yes).
    removal = d.tx(
        gov["inst-0"],
        "ProposeRemoval",
        {"institution_id": "inst-3", "reason": "left the consortium"},
    )
    b4 = d.block([removal])
    vote_out = {"proposal_id": b4.results[0].tx_id, "approve": True}
    b5 = d.block(
        [
            d.tx(gov["inst-1"], "CastVote", vote_out),
            d.tx(gov["inst-2"], "CastVote", vote_out),
            d.tx(new_gov, "CastVote", vote_out),
            d.tx(gov["inst-3"], "AnchorData", {"data_id": "last", **ANCHOR}),
        ]
    )
    assert [r.code.name for r in b5.results] == ["OK", "OK", "OK", "OK"]
    assert "inst-3" in member_ids(d.machine.state, 5)
    assert "inst-3" not in member_ids(d.machine.state, 6)

    # Block 6: four members again; inst-3 can neither write nor finalize.
    b6 = d.block([d.tx(gov["inst-3"], "AnchorData", {"data_id": "too-late", **ANCHOR})])
    assert b6.results[0].code.name == "INACTIVE_SENDER"
    assert sorted(b6.validator_set.members) == ["inst-0", "inst-1", "inst-2", "inst-new"]
    tracker.set_validators(b6.validator_set)
    assert feed(tracker, votes_for(b6, [op["inst-3"], op["inst-0"], new_op])) == []

    # inst-1's operator equivocates at height 6: detected, and then recorded on chain.
    honest = sign_vote(op["inst-1"], height=6, block_hash=b6.block_hash)
    forged = sign_vote(op["inst-1"], height=6, block_hash=b"\xee" * 32)
    events = feed(tracker, [forged, honest])
    assert events == [Equivocation(first=forged, second=honest)]
    assert tracker.final(6) is None  # the equivocator's second vote does not count
    assert isinstance(feed(tracker, votes_for(b6, [op["inst-2"]]))[-1], Finalized)
    evidence = d.tx(
        gov["inst-0"], "ReportEquivocation", {"vote_a": forged.record(), "vote_b": honest.record()}
    )
    b7 = d.block(
        [
            evidence,
            d.tx(
                gov["inst-2"],
                "ReportEquivocation",
                {"vote_a": honest.record(), "vote_b": forged.record()},
            ),
        ]
    )
    assert [r.code.name for r in b7.results] == ["OK", "ALREADY_EXISTS"]
    record = d.machine.state.get(f"evidence/{op['inst-1'].key_id.hex()}/6")
    assert record is not None and record["institution_id"] == "inst-1"

    # Divergence: a validator whose own hash differs is told to stop.
    assert tracker.set_own_hash(6, b"\x00" * 32)[0].final_hash == b6.block_hash  # type: ignore[union-attr]
