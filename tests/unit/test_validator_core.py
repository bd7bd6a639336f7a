"""The validator state machine, driven without a broker: the same log to several cores."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ledger.cutter import TimeToCut
from ledger.errors import DecodeError
from ledger.execution import LedgerMachine
from ledger.genesis import ConsortiumPlan, genesis_state
from ledger.publication import PublishFinal
from ledger.snapshot import decode_snapshot, encode_snapshot
from ledger.validator_core import (
    Action,
    Diverged,
    EmitMarker,
    SendVote,
    SubmitTx,
    ValidatorCore,
)
from ledger.votes import sign_vote
from tests.unit.chain_helpers import CHAIN, Driver, consortium


def make_core(plan: ConsortiumPlan, inst: str) -> ValidatorCore:
    return ValidatorCore(
        machine=LedgerMachine(plan.genesis),
        final_state=genesis_state(plan.genesis),
        operator=plan.keys[inst][1][0],
    )


def anchors(driver: Driver, count: int, start: int = 0) -> list[bytes]:
    gov = driver.gov("inst-0")
    return [
        driver.tx(gov, "AnchorData", {"data_id": f"d{i}", "sha256": bytes(32), "metadata": ""})
        for i in range(start, start + count)
    ]


class Network:
    """Cores fed one tx log; votes delivered in one shared order."""

    def __init__(self, plan: ConsortiumPlan, members: Sequence[str]) -> None:
        self.cores = {inst: make_core(plan, inst) for inst in members}
        self.votes: list[bytes] = []
        self.published: dict[str, list[PublishFinal]] = {i: [] for i in members}
        self.actions: dict[str, list[Action]] = {i: [] for i in members}
        self.offset = 0
        self.vote_offset = 0

    def feed_tx(self, raws: Sequence[bytes], ts: int = 1000) -> None:
        for raw in raws:
            for inst, core in self.cores.items():
                self._record(inst, core.on_tx(self.offset, ts, raw))
            self.offset += 1

    def deliver_votes(self) -> None:
        while self.vote_offset < len(self.votes):
            raw = self.votes[self.vote_offset]
            for inst, core in self.cores.items():
                self._record(inst, core.on_vote(self.vote_offset, raw))
            self.vote_offset += 1

    def _record(self, inst: str, actions: list[Action]) -> None:
        self.actions[inst].extend(actions)
        for action in actions:
            if isinstance(action, SendVote):
                self.votes.append(action.raw)
            elif isinstance(action, PublishFinal):
                self.published[inst].append(action)


def marker(plan: ConsortiumPlan, height: int) -> bytes:
    return TimeToCut(chain_id=CHAIN, height=height, producer=b"t").encode()


def test_four_cores_publish_identical_final_blocks_and_pipeline() -> None:
    plan = consortium(4, max_block_txs=5)
    net = Network(plan, ["inst-0", "inst-1", "inst-2", "inst-3"])
    net.feed_tx(anchors(Driver(plan), 23))
    # pipelining: 4 blocks cut and voted before any vote was read
    assert {c.cut_height for c in net.cores.values()} == {4}
    assert {c.voted_height for c in net.cores.values()} == {4}
    assert {c.final_height for c in net.cores.values()} == {0}
    net.deliver_votes()
    assert {c.final_height for c in net.cores.values()} == {4}
    assert [p.height for p in net.published["inst-0"]] == [1, 2, 3, 4]
    # one publisher (D47); the others hold the same bytes: its copies release them all
    assert {i: c.publication.held_heights for i, c in net.cores.items() if i != "inst-0"} == {
        i: [1, 2, 3, 4] for i in ("inst-1", "inst-2", "inst-3")
    }
    for pub in net.published["inst-0"]:
        for inst in ("inst-1", "inst-2", "inst-3"):
            net.cores[inst].on_published(pub.height, b"", pub.block)
    assert all(c.publication.held_heights == [] for c in net.cores.values())
    assert all(len(p.receipts) == 5 for p in net.published["inst-0"])
    # the 3 pending txs wait for a marker; a stale marker (height 2) is ignored
    net.feed_tx([marker(plan, 2)])
    assert {c.cut_height for c in net.cores.values()} == {4}
    net.feed_tx([marker(plan, 5)])
    net.deliver_votes()
    assert {c.final_height for c in net.cores.values()} == {5}


def test_quorum_needs_three_of_four_and_a_replaying_core_does_not_vote_on_history() -> None:
    plan = consortium(4, max_block_txs=5)
    net = Network(plan, ["inst-0", "inst-1"])  # only 2 of 4 alive: no finality
    txs = anchors(Driver(plan), 10)
    net.feed_tx(txs)
    net.deliver_votes()
    assert {c.final_height for c in net.cores.values()} == {0}
    late = make_core(plan, "inst-2")  # a third joins, replays both logs
    for offset, raw in enumerate(txs):
        late.on_tx(offset, 1000, raw)
    for offset, raw in enumerate(net.votes):
        late.on_vote(offset, raw)
    assert late.voted_height == 2
    assert late.final_height == 0  # its own votes are not in the log yet
    # once votes of three institutions are in the log, height 1 and 2 are final
    third = [a.raw for a in [*make_votes(late, plan, "inst-2")]]
    for offset, raw in enumerate(third, start=len(net.votes)):
        late.on_vote(offset, raw)
    assert late.final_height == 2
    # replaying history that is already final produces no vote
    replay = make_core(plan, "inst-3")
    for offset, raw in enumerate([*net.votes, *third]):
        replay.on_vote(offset, raw)
    actions = [a for o, raw in enumerate(txs) for a in replay.on_tx(o, 1000, raw)]
    assert not [a for a in actions if isinstance(a, SendVote)]
    assert replay.final_height == 2


def make_votes(core: ValidatorCore, plan: ConsortiumPlan, inst: str) -> list[SendVote]:
    return [
        SendVote(
            h,
            ex.block_hash,
            sign_vote(plan.keys[inst][1][0], height=h, block_hash=ex.block_hash).encode(),
        )
        for h, ex in sorted(core.executed.items())
    ]


def test_divergence_stops_voting() -> None:
    plan = consortium(4, max_block_txs=2)
    core = make_core(plan, "inst-0")
    txs = anchors(Driver(plan), 4)
    core.on_tx(0, 1000, txs[0])
    core.on_tx(1, 1000, txs[1])  # block 1 cut and voted
    wrong = bytes(32)
    events: list[Action] = []
    for offset, inst in enumerate(["inst-1", "inst-2", "inst-3"]):
        vote = sign_vote(plan.keys[inst][1][0], height=1, block_hash=wrong)
        events += core.on_vote(offset, vote.encode())
    assert [type(a) for a in events] == [Diverged]
    assert core.final_height == 0  # never publishes a block it did not compute
    later = core.on_tx(2, 1000, txs[2]) + core.on_tx(3, 1000, txs[3])
    assert not [a for a in later if isinstance(a, SendVote)]


def test_equivocation_becomes_signed_evidence_and_is_never_counted() -> None:
    plan = consortium(4, max_block_txs=2)
    core = make_core(plan, "inst-0")
    txs = anchors(Driver(plan), 2)
    core.on_tx(0, 1000, txs[0])
    core.on_tx(1, 1000, txs[1])
    liar = plan.keys["inst-3"][1][0]
    a = sign_vote(liar, height=1, block_hash=b"\x01" * 32).encode()
    b = sign_vote(liar, height=1, block_hash=b"\x02" * 32).encode()
    actions = core.on_vote(0, a) + core.on_vote(1, b) + core.on_vote(2, b)
    evidence = [x for x in actions if isinstance(x, SubmitTx)]
    assert len(evidence) == 1
    assert core.counters.equivocations == 1
    driver = Driver(plan)
    driver.block(txs)
    executed = driver.block([evidence[0].raw])
    assert executed.results[0].code.name == "OK"
    assert driver.machine.state.get(f"evidence/{liar.key_id.hex()}/1") is not None


def test_malformed_votes_are_counted_and_ignored() -> None:
    plan = consortium(4)
    core = make_core(plan, "inst-0")
    assert core.on_vote(0, b"\xc3\x01garbage") == []
    assert core.on_vote(1, b"") == []
    assert core.counters.malformed_votes == 2


def test_marker_is_emitted_once_per_height_and_only_when_caught_up() -> None:
    plan = consortium(4, block_interval_ms=100)
    core = make_core(plan, "inst-0")
    assert core.on_tick(10_000, caught_up=True) == []  # nothing pending
    core.on_tx(0, 1000, anchors(Driver(plan), 1)[0])
    assert core.on_tick(1050, caught_up=True) == []  # not waited long enough
    assert core.on_tick(5000, caught_up=False) == []  # replaying: never
    (emit,) = core.on_tick(1100, caught_up=True)
    assert isinstance(emit, EmitMarker) and emit.height == 1
    assert core.on_tick(9000, caught_up=True) == []  # once per height


def test_snapshot_round_trip_resumes_with_identical_hashes() -> None:
    plan = consortium(4, max_block_txs=3)
    net = Network(plan, ["inst-0", "inst-1", "inst-2"])
    txs = anchors(Driver(plan), 12)
    net.feed_tx(txs[:6])
    net.deliver_votes()
    core = net.cores["inst-0"]
    assert core.final_height == 2
    meta = core.snapshot_meta(votes_position=net.vote_offset)
    raw = encode_snapshot(core.final.final_state, meta)
    state, loaded = decode_snapshot(raw)
    assert loaded == meta and loaded.tx_offset == 6
    resumed = ValidatorCore(
        machine=LedgerMachine.resume(plan.genesis, state, loaded.block_hash),
        final_state=decode_snapshot(raw)[0],
        operator=plan.keys["inst-0"][1][0],
        next_tx_offset=loaded.tx_offset,
    )
    net.feed_tx(txs[6:])
    for offset, raw_tx in enumerate(txs[6:], start=6):
        resumed.on_tx(offset, 1000, raw_tx)
    assert resumed.executed[4].block_hash == net.cores["inst-1"].executed[4].block_hash
    for bad in (raw[:-1], raw[:50], raw[:-40] + bytes(40), b"junk"):
        with pytest.raises(DecodeError):
            decode_snapshot(bad)


def test_equivocation_after_finality_is_still_caught_once() -> None:
    plan = consortium(4, max_block_txs=2)
    net = Network(plan, ["inst-0", "inst-1", "inst-2", "inst-3"])
    net.feed_tx(anchors(Driver(plan), 2))
    net.deliver_votes()
    core = net.cores["inst-0"]
    assert core.final_height == 1
    liar = plan.keys["inst-3"][1][0]
    second = sign_vote(liar, height=1, block_hash=b"\x05" * 32).encode()
    forged = sign_vote(plan.keys["inst-2"][0], height=1, block_hash=b"\x06" * 32).encode()
    actions = core.on_vote(10, second) + core.on_vote(11, second) + core.on_vote(12, forged)
    assert len([a for a in actions if isinstance(a, SubmitTx)]) == 1
    assert core.final_height == 1


def test_vouched_signatures_skip_only_the_verify_call() -> None:
    """The shell's workers vouch for signatures (D18): honest vouching gives the same block
    as verifying in the core; a wrong vouch is believed (so workers must only vouch for what
    signature_verifies says), and an unvouched bad signature is still caught by the core."""
    plan = consortium(4, max_block_txs=4)
    good = anchors(Driver(plan), 3)
    bad = good[2][:-1] + bytes([good[2][-1] ^ 1])  # same body, signature off by one bit
    log = [*good[:2], bad, good[2]]

    def block_hash(vouch: set[bytes]) -> bytes:
        core = make_core(plan, "inst-0")
        actions: list[Action] = []
        for offset, raw in enumerate(log):
            actions += core.on_tx(offset, 1000, raw, signature_verified=raw in vouch)
        [vote] = [a for a in actions if isinstance(a, SendVote)]
        assert not core._vouched  # nothing kept beyond the block
        return vote.block_hash

    in_core = block_hash(set())
    assert block_hash(set(good)) == in_core
    assert block_hash({*good, bad}) != in_core


def test_signatures_checked_ahead_of_the_cut_give_the_same_block() -> None:
    """D73: the pending entries are checked in batches while the core waits for the cut;
    those that verify are vouched for, a bad one is not (and the block still refuses it),
    fewer than ``min_batch`` wait, and the next block's checks start from its own first
    entry. The block hash is the one a core that never checked ahead computes."""
    plan = consortium(4, max_block_txs=8)
    good = anchors(Driver(plan), 7)
    bad = good[3][:-1] + bytes([good[3][-1] ^ 1])
    log = [*good[:3], bad, *good[3:6], marker(plan, 1), good[6]]

    def run(ahead: bool) -> tuple[bytes, list[int]]:
        core = make_core(plan, "inst-0")
        checked, actions = [], []
        for offset, raw in enumerate(log):
            actions += core.on_tx(offset, 1000, raw)
            if ahead:
                checked.append(core.verify_ahead(min_batch=3))
        [vote] = [a for a in actions if isinstance(a, SendVote)]
        return vote.block_hash, checked

    reference, _ = run(ahead=False)
    block_hash, checked = run(ahead=True)
    assert block_hash == reference
    # 3 entries: one batch; 3 more (the bad one first): a second; the 7th alone waits
    # and is checked at the cut; the next block's first entry alone waits again
    assert checked == [0, 0, 3, 0, 0, 3, 0, 0, 0]

    core = make_core(plan, "inst-0")
    for offset, raw in enumerate(log[:4]):
        core.on_tx(offset, 1000, raw)
    assert core.verify_ahead(min_batch=1) == 4
    assert core._vouched == set(good[:3])  # never the bad signature
