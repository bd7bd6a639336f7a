"""Institutions with several operators in the pure core (D38): all vote, one publishes."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.execution import LedgerMachine
from ledger.finality import FinalityTracker, Finalized
from ledger.genesis import ConsortiumPlan, genesis_state
from ledger.keys import KeyPair
from ledger.validator_core import (
    Action,
    EmitMarker,
    PublishFinal,
    SendVote,
    ValidatorCore,
    takeover_delay_ms,
)
from ledger.votes import sign_vote
from tests.unit.chain_helpers import Driver, consortium

Node = tuple[str, int]  # (institution, operator index in the plan)


def ranked(plan: ConsortiumPlan, inst: str) -> list[KeyPair]:
    """The operators of ``inst`` in rank order (sorted key ids)."""
    return sorted(plan.keys[inst][1], key=lambda k: k.key_id)


def make_core(plan: ConsortiumPlan, node: Node) -> ValidatorCore:
    inst, rank = node
    return ValidatorCore(
        machine=LedgerMachine(plan.genesis),
        final_state=genesis_state(plan.genesis),
        operator=ranked(plan, inst)[rank],
    )


class Network:
    """Cores fed one tx log; votes delivered in one shared order; copies can be announced."""

    def __init__(self, plan: ConsortiumPlan, nodes: Sequence[Node]) -> None:
        self.cores = {node: make_core(plan, node) for node in nodes}
        self.votes: list[bytes] = []
        self.published: dict[Node, list[PublishFinal]] = {n: [] for n in nodes}
        self.markers: dict[Node, list[int]] = {n: [] for n in nodes}
        self.offset = 0
        self.vote_offset = 0

    def feed_tx(self, raws: Sequence[bytes], ts: int = 1000) -> None:
        for raw in raws:
            for node, core in self.cores.items():
                self.record(node, core.on_tx(self.offset, ts, raw))
            self.offset += 1

    def deliver_votes(self) -> None:
        while self.vote_offset < len(self.votes):
            raw = self.votes[self.vote_offset]
            for node, core in self.cores.items():
                self.record(node, core.on_vote(self.vote_offset, raw))
            self.vote_offset += 1

    def tick(self, now_ms: int) -> None:
        for node, core in self.cores.items():
            self.record(node, core.on_tick(now_ms, caught_up=True))

    def announce(self, node: Node) -> None:
        """Everybody reads the copies ``node`` published so far."""
        publisher = self.cores[node].operator.key_id
        for p in self.published[node]:
            for other, core in self.cores.items():
                self.record(other, core.on_published(p.height, publisher))

    def record(self, node: Node, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendVote):
                self.votes.append(action.raw)
            elif isinstance(action, PublishFinal):
                self.published[node].append(action)
            elif isinstance(action, EmitMarker):
                self.markers[node].append(action.height)


def anchors(plan: ConsortiumPlan, count: int) -> list[bytes]:
    driver = Driver(plan)
    gov = driver.gov("inst-0")
    return [
        driver.tx(gov, "AnchorData", {"data_id": f"d{i}", "sha256": bytes(32), "metadata": ""})
        for i in range(count)
    ]


def heights(pubs: list[PublishFinal]) -> list[int]:
    return [p.height for p in pubs]


def test_two_operators_of_one_institution_count_once() -> None:
    plan = consortium(4, operators=2)
    validators = LedgerMachine(plan.genesis).validator_set()
    tracker = FinalityTracker()
    tracker.set_validators(validators)
    h = bytes(32)
    votes = [
        sign_vote(op, height=validators.height, block_hash=h)
        for inst in ("inst-0", "inst-1")
        for op in plan.keys[inst][1]
    ]
    assert not [e for v in votes for e in tracker.add_vote(v)]  # 4 operators, 2 institutions
    (final,) = tracker.add_vote(sign_vote(plan.keys["inst-2"][1][1], height=1, block_hash=h))
    assert isinstance(final, Finalized)
    insts = [validators.institution_of(v.operator_key_id) for v in final.certificate.votes]
    assert insts == ["inst-0", "inst-1", "inst-2"]


def test_every_operator_votes_but_only_rank_zero_publishes() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [(f"inst-{i}", r) for i in range(4) for r in (0, 1)]
    net = Network(plan, nodes)
    net.feed_tx(anchors(plan, 10))
    assert len(net.votes) == 2 * 4  # the primaries vote at once; the standbys follow them
    assert {c.cut_height for n, c in net.cores.items() if n[1] == 1} == {0}
    net.deliver_votes()
    assert len(net.votes) == 2 * 8  # two blocks, eight operators
    assert {c.final_height for c in net.cores.values()} == {2}
    standbys = [c for n, c in net.cores.items() if n[1] == 1]
    assert all(c.counters.optimistic == 2 and c.counters.optimistic_misses == 0 for c in standbys)
    assert {c.rank for c in net.cores.values()} == {0, 1}
    for (inst, rank), core in net.cores.items():
        assert heights(net.published[(inst, rank)]) == ([1, 2] if rank == 0 else [])
        assert core.held_heights == ([] if rank == 0 else [1, 2])
        assert core.publishing == (rank == 0) and core.has_peers
    # a primary's copies release its standby; another institution's copies do not
    net.announce(("inst-0", 0))
    assert net.cores[("inst-0", 1)].held_heights == []
    assert net.cores[("inst-1", 1)].held_heights == [1, 2]
    # time passes: the standbys whose primary was silent take over, in height order
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.tick(5000)
    net.tick(5000 + delay - 1)
    assert all(net.published[(i, 1)] == [] for i in ("inst-0", "inst-1", "inst-2", "inst-3"))
    net.tick(5000 + delay)
    assert net.published[("inst-0", 1)] == []
    for inst in ("inst-1", "inst-2", "inst-3"):
        assert heights(net.published[(inst, 1)]) == [1, 2]
        assert [p.block for p in net.published[(inst, 1)]] == [
            p.block for p in net.published[(inst, 0)]
        ]
        assert net.cores[(inst, 1)].took_over


def test_a_standby_that_took_over_publishes_at_once_and_steps_back() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    primary, standby = ("inst-1", 0), ("inst-1", 1)
    others = [(f"inst-{i}", 0) for i in (0, 2, 3)]
    net = Network(plan, [standby, *others])  # inst-1's primary is down
    txs = anchors(plan, 25)
    net.feed_tx(txs[:5])
    net.deliver_votes()
    # height 1 is final without inst-1; its standby ran it against the final hash
    assert net.cores[standby].cut_height == 1 and net.cores[standby].counters.optimistic == 1
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.tick(0)
    assert net.published[standby] == []
    net.tick(delay)
    assert heights(net.published[standby]) == [1]
    net.feed_tx(txs[5:10])
    net.deliver_votes()
    assert heights(net.published[standby]) == [1, 2]  # at once now
    # the primary comes back, catches up from the logs and publishes: the standby steps back
    back = make_core(plan, primary)
    net.cores[primary] = back
    net.published[primary] = []
    for offset, raw in enumerate(txs[:10]):
        net.record(primary, back.on_tx(offset, 1000, raw))
    for offset, raw in enumerate(net.votes):
        net.record(primary, back.on_vote(offset, raw))
    assert heights(net.published[primary]) == [1, 2]
    net.announce(primary)
    assert not net.cores[standby].took_over
    net.feed_tx(txs[10:15])
    net.deliver_votes()
    assert heights(net.published[standby]) == [1, 2]
    assert net.cores[standby].held_heights == [3]


def test_a_standby_whose_primary_is_silent_verifies_and_votes_on_its_own() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    standby = ("inst-0", 1)
    net = Network(plan, [standby, ("inst-1", 0)])  # no quorum: nothing becomes final
    net.feed_tx(anchors(plan, 10))
    net.deliver_votes()
    core = net.cores[standby]
    assert core.cut_height == 0 and core.following  # waits for its primary's vote
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.tick(100)
    net.tick(100 + delay - 1)
    assert core.cut_height == 0
    net.tick(100 + delay)
    assert core.eager and core.cut_height == 2 and core.voted_height == 2
    assert core.counters.optimistic == 0  # no reference hash: every signature verified
    # its primary votes again, as far as the standby got: the standby follows it again
    primary = make_core(plan, ("inst-0", 0))
    for offset, raw in enumerate(anchors(plan, 10)):
        primary.on_tx(offset, 1000, raw)
    (vote,) = [sign_vote(primary.operator, height=2, block_hash=primary.executed[2].block_hash)]
    core.on_vote(len(net.votes), vote.encode())
    assert not core.eager and core.following


def test_a_bad_signature_makes_the_optimistic_run_miss_and_verification_decide() -> None:
    plan = consortium(4, operators=2, max_block_txs=3)
    good = anchors(plan, 2)
    forged = bytearray(anchors(plan, 3)[2])
    forged[-5] ^= 0x01  # inside the signature
    nodes = [(f"inst-{i}", r) for i in range(4) for r in (0, 1)]
    net = Network(plan, nodes)
    net.feed_tx([*good, bytes(forged)])
    net.deliver_votes()
    assert {c.final_height for c in net.cores.values()} == {1}
    assert len({c.final.final_hash for c in net.cores.values()}) == 1
    for (_, rank), core in net.cores.items():
        assert core.diverged is None
        if rank == 1:
            assert core.counters.optimistic_misses == 1 and core.counters.optimistic == 0
    codes = [c.name for c in net.published[("inst-0", 0)][0].codes]
    assert codes == ["OK", "OK", "BAD_SIGNATURE"]


def test_a_standby_marker_is_a_late_fallback() -> None:
    plan = consortium(4, operators=2, block_interval_ms=100)
    net = Network(plan, [("inst-0", 0), ("inst-0", 1)])
    net.feed_tx(anchors(plan, 1), ts=1000)
    net.tick(1100)
    assert net.markers == {("inst-0", 0): [1], ("inst-0", 1): []}
    delay = takeover_delay_ms(100)
    net.tick(1100 + delay - 1)
    assert net.markers[("inst-0", 1)] == []
    net.tick(1100 + delay)
    assert net.markers[("inst-0", 1)] == [1]


def test_one_operator_institutions_publish_as_before() -> None:
    plan = consortium(4, max_block_txs=5)
    net = Network(plan, [(f"inst-{i}", 0) for i in range(4)])
    net.feed_tx(anchors(plan, 10))
    net.deliver_votes()
    for core in net.cores.values():
        assert core.rank == 0 and core.publishing and not core.has_peers
    assert all(heights(p) == [1, 2] for p in net.published.values())
