"""Several operators in the pure core (D38, D47, D52): primaries vote, standbys apply their
primaries' feeds, one operator of the consortium publishes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ledger.execution import LedgerMachine
from ledger.finality import FinalityTracker, Finalized
from ledger.genesis import ConsortiumPlan, genesis_state
from ledger.keys import KeyPair
from ledger.publication import PublishFinal, publication_delay_ms, takeover_delay_ms
from ledger.validator_core import (
    Action,
    EmitMarker,
    SendFeed,
    SendVote,
    ValidatorCore,
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
    """Cores fed one tx log, each read as its shell would (a following standby reads none of
    it, a standby that turns eager from its ``tx_seek``, D57); votes delivered in one shared
    order; copies can be announced."""

    def __init__(
        self, plan: ConsortiumPlan, nodes: Sequence[Node], *, route_feeds: bool = True
    ) -> None:
        self.cores = {node: make_core(plan, node) for node in nodes}
        self.votes: list[bytes] = []
        self.feeds: list[tuple[bytes, bytes]] = []  # (sender key id, feed), D52
        self.route_feeds = route_feeds
        self.published: dict[Node, list[PublishFinal]] = {n: [] for n in nodes}
        self.markers: dict[Node, list[int]] = {n: [] for n in nodes}
        self.log: list[tuple[int, bytes]] = []  # (timestamp, raw) by offset
        self.read: dict[Node, int] = {n: 0 for n in nodes}  # next offset each core reads
        self.tx_given: Counter[Node] = Counter()  # tx messages given to each core
        self.vote_offset = 0

    @property
    def offset(self) -> int:
        return len(self.log)

    def feed_tx(self, raws: Sequence[bytes], ts: int = 1000) -> None:
        for raw in raws:
            self.log.append((ts, raw))
            self.pump()

    def pump(self) -> None:
        """Give every core that reads the tx log what it has not read yet (from its seek)."""
        moved = True
        while moved:
            moved = False
            for node, core in self.cores.items():
                core.note_tx_end(len(self.log))
                if core.tx_seek is not None:
                    self.read[node], core.tx_seek = core.tx_seek, None
                while core.reads_tx and self.read[node] < len(self.log):
                    offset = self.read[node]
                    self.read[node] += 1
                    self.tx_given[node] += 1
                    ts, raw = self.log[offset]
                    self.record(node, core.on_tx(offset, ts, raw))
                    moved = True

    def deliver_votes(self) -> None:
        """Deliver the feeds sent so far, then the votes, until none is left."""
        while self.feeds or self.vote_offset < len(self.votes):
            feeds, self.feeds = self.feeds, []
            for sender, raw in feeds:
                for node, core in self.cores.items():
                    self.record(node, core.on_feed(sender, raw))
            if self.vote_offset < len(self.votes):
                raw = self.votes[self.vote_offset]
                for node, core in self.cores.items():
                    self.record(node, core.on_vote(self.vote_offset, raw))
                self.vote_offset += 1
            self.pump()

    def tick(self, now_ms: int) -> None:
        for node, core in self.cores.items():
            self.record(node, core.on_tick(now_ms, caught_up=True))
        self.pump()

    def announce(self, node: Node) -> None:
        """Everybody reads the copies ``node`` published so far."""
        publisher = self.cores[node].operator.key_id
        for p in self.published[node]:
            for other, core in self.cores.items():
                self.record(other, core.on_published(p.height, publisher, p.block))

    def record(self, node: Node, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendVote):
                self.votes.append(action.raw)
            elif isinstance(action, PublishFinal):
                self.published[node].append(action)
            elif isinstance(action, EmitMarker):
                self.markers[node].append(action.height)
            elif isinstance(action, SendFeed) and self.route_feeds:
                self.feeds.append((self.cores[node].operator.key_id, action.raw))


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


def publication(operators: int) -> list[Node]:
    """The nodes of ``consortium(4, operators=...)`` in publication order (D47)."""
    return [(f"inst-{i}", r) for r in range(operators) for i in range(4)]


def test_primaries_vote_standbys_apply_and_one_publishes_for_the_consortium() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [(f"inst-{i}", r) for i in range(4) for r in (0, 1)]
    net = Network(plan, nodes)
    net.feed_tx(anchors(plan, 10))
    assert len(net.votes) == 2 * 4  # the primaries vote at once; the standbys follow them
    assert len(net.feeds) == 2 * 4  # ... and send what they executed to their standbys
    assert {c.cut_height for n, c in net.cores.items() if n[1] == 1} == {0}
    net.deliver_votes()
    assert len(net.votes) == 2 * 4  # a following standby does not vote (D52)
    assert {c.final_height for c in net.cores.values()} == {2}
    assert len({c.final.final_state.root for c in net.cores.values()}) == 1
    standbys = [c for n, c in net.cores.items() if n[1] == 1]
    assert all(c.counters.applied == 2 and c.counters.optimistic == 0 for c in standbys)
    assert all(c.voted_height == 0 and c.following for c in standbys)
    assert {c.rank for c in net.cores.values()} == {0, 1}
    assert [net.cores[n].publisher_rank for n in publication(2)] == list(range(8))
    first = ("inst-0", 0)
    for node, core in net.cores.items():
        assert heights(net.published[node]) == ([1, 2] if node == first else [])
        assert core.publication.held_heights == ([] if node == first else [1, 2])
        assert core.publishing == (node == first) and len(core.publication.order) > 1
    # a copy with other bytes releases nothing; the publisher's copies release everyone
    copy = net.published[first][0]
    net.cores[("inst-1", 0)].on_published(1, b"", copy.block + b"\x00")
    assert net.cores[("inst-1", 0)].publication.held_heights == [1, 2]
    net.announce(first)
    assert all(c.publication.held_heights == [] for c in net.cores.values())
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.tick(5000)
    net.tick(5000 + 9 * delay)
    assert sum(len(p) for p in net.published.values()) == 2  # nobody took over
    assert not any(c.publication.took_over for c in net.cores.values())


def test_a_copy_read_before_finality_releases_the_height_when_it_becomes_final() -> None:
    plan = consortium(4, max_block_txs=5)
    net = Network(plan, [(f"inst-{i}", 0) for i in range(3)])
    txs = anchors(plan, 5)
    net.feed_tx(txs)
    net.deliver_votes()
    assert heights(net.published[("inst-0", 0)]) == [1]
    late = make_core(plan, ("inst-3", 0))
    (copy,) = net.published[("inst-0", 0)]
    assert late.on_published(1, b"", copy.block) == []  # a copy without a label counts
    for offset, raw in enumerate(txs):
        late.on_tx(offset, 1000, raw)
    actions = [a for o, raw in enumerate(net.votes) for a in late.on_vote(o, raw)]
    assert late.final_height == 1 and late.publication.held_heights == []
    assert not [a for a in actions if isinstance(a, PublishFinal)]


def test_the_next_publisher_takes_over_and_steps_back() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    primary, second = ("inst-0", 0), ("inst-1", 0)
    nodes = [n for n in publication(2) if n != primary]  # the first publisher is down
    net = Network(plan, nodes)
    txs = anchors(plan, 25)
    net.feed_tx(txs[:5])
    net.deliver_votes()
    # height 1 is final without inst-0's primary; its standby, with no feed, waits for it
    # for the takeover delay, then runs it against the final hash (D52)
    standby = net.cores[("inst-0", 1)]
    assert standby.cut_height == 0 and standby.following
    assert all(c.publication.held_heights == [1] for c in net.cores.values() if c is not standby)
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.tick(0)
    net.tick(delay - 1)
    assert not any(net.published.values())
    interval = plan.genesis.params.block_interval_ms
    assert publication_delay_ms(1, interval) == delay
    assert publication_delay_ms(3, interval) == delay + 2 * max(1000, 2 * interval)
    net.tick(delay)  # the second in the order takes over; the later ones wait longer
    assert standby.eager and standby.cut_height == 1 and standby.counters.optimistic == 1
    assert standby.voted_height == 0  # height 1 was final: no vote on history
    assert heights(net.published[second]) == [1] and net.cores[second].publication.took_over
    assert all(net.published[n] == [] for n in nodes if n != second)
    net.announce(second)
    assert all(c.publication.held_heights == [] for c in net.cores.values())
    net.tick(2 * delay)
    net.feed_tx(txs[5:10])
    net.deliver_votes()
    assert heights(net.published[second]) == [1, 2]  # at once now
    assert sum(len(p) for p in net.published.values()) == 2
    # the first publisher comes back, catches up from the logs and publishes: the second
    # steps back
    back = make_core(plan, primary)
    net.cores[primary] = back
    net.published[primary] = []
    for offset, raw in enumerate(txs[:10]):
        net.record(primary, back.on_tx(offset, 1000, raw))
    net.read[primary] = 10
    for offset, raw in enumerate(net.votes):
        net.record(primary, back.on_vote(offset, raw))
    assert heights(net.published[primary]) == [1, 2]
    net.announce(primary)
    assert not net.cores[second].publication.took_over
    net.feed_tx(txs[10:15])
    net.deliver_votes()
    assert heights(net.published[second]) == [1, 2]
    assert net.cores[second].publication.held_heights == [3]
    assert heights(net.published[primary]) == [1, 2, 3]


def test_a_forged_label_only_delays_publication() -> None:
    """Junk labelled as the first publisher (D47, D54): the operator that took over steps
    back, holds again, and after the delay publishes everything it held; junk never
    releases a held block."""
    plan = consortium(4, max_block_txs=5)
    nodes = [n for n in publication(1) if n != ("inst-0", 0)]  # the first publisher is down
    net = Network(plan, nodes)
    txs = anchors(plan, 15)
    forged_label = make_core(plan, ("inst-0", 0)).operator.key_id
    second = ("inst-1", 0)
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.feed_tx(txs[:5])
    net.deliver_votes()
    net.tick(0)
    net.tick(delay)
    assert heights(net.published[second]) == [1] and net.cores[second].publication.took_over
    net.announce(second)
    # the attacker writes junk for the next height under the first publisher's label
    for node, core in net.cores.items():
        net.record(node, core.on_published(2, forged_label, b"junk"))
    assert not net.cores[
        second
    ].publication.took_over  # the label is believed as a liveness hint ...
    net.feed_tx(txs[5:10])
    net.deliver_votes()
    assert all(
        c.publication.held_heights == [2] for c in net.cores.values()
    )  # ... the bytes are not
    net.tick(delay + 1)
    assert heights(net.published[second]) == [1]  # late ...
    net.tick(2 * delay + 1)
    assert heights(net.published[second]) == [1, 2]  # ... never lost
    assert net.cores[second].publication.took_over
    assert all(net.published[n] == [] for n in nodes if n != second)


def test_a_publisher_that_skips_a_height_is_taken_over_for_it() -> None:
    plan = consortium(4, max_block_txs=5)
    nodes = publication(1)
    net = Network(plan, nodes)
    net.feed_tx(anchors(plan, 10))
    net.deliver_votes()
    second = net.cores[("inst-1", 0)]
    (h1, h2) = net.published[("inst-0", 0)]
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    second.on_tick(0, caught_up=True)
    second.on_published(2, net.cores[("inst-0", 0)].operator.key_id, h2.block)
    assert second.publication.held_heights == [1]
    actions = second.on_tick(delay, caught_up=True)
    assert [a.height for a in actions if isinstance(a, PublishFinal)] == [1]
    assert [a.block for a in actions if isinstance(a, PublishFinal)] == [h1.block]


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
    net = Network(plan, nodes, route_feeds=False)  # standbys without feeds turn eager ...
    net.feed_tx([*good, bytes(forged)])
    net.deliver_votes()
    net.tick(0)
    net.tick(takeover_delay_ms(plan.genesis.params.block_interval_ms))  # ... and run it
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
    net.tick(1100 + delay)  # the standby takes over: reads the tx log (D57) ...
    assert net.cores[("inst-0", 1)].eager and net.markers[("inst-0", 1)] == []
    net.tick(1100 + delay)  # ... and cuts from it: its marker is due
    assert net.markers[("inst-0", 1)] == [1]


def test_one_operator_institutions_publish_from_the_first_only() -> None:
    plan = consortium(4, max_block_txs=5)
    net = Network(plan, publication(1))
    net.feed_tx(anchors(plan, 10))
    net.deliver_votes()
    for node, core in net.cores.items():
        assert core.rank == 0 and len(core.publication.order) > 1
        assert core.publishing == (node == ("inst-0", 0))
    assert {n: heights(p) for n, p in net.published.items()} == {
        ("inst-0", 0): [1, 2],
        ("inst-1", 0): [],
        ("inst-2", 0): [],
        ("inst-3", 0): [],
    }


def test_a_single_validator_publishes_and_reads_no_copies() -> None:
    plan = consortium(1, max_block_txs=5)
    net = Network(plan, [("inst-0", 0)])
    net.feed_tx(anchors(plan, 5))
    net.deliver_votes()
    core = net.cores[("inst-0", 0)]
    assert core.publishing and not len(core.publication.order) > 1
    assert heights(net.published[("inst-0", 0)]) == [1]
