"""A standby applies its primary's executed blocks once final, never trusting them (D52)."""

from __future__ import annotations

import pytest

from ledger.errors import DecodeError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.genesis import ConsortiumPlan, genesis_writes
from ledger.publication import takeover_delay_ms
from ledger.standby_feed import (
    LEAF,
    FeedBuffer,
    apply_feed,
    decode_feed,
    encode_feed,
)
from ledger.state import WriteSet
from ledger.validator_core import SendFeed, SendVote, ValidatorCore
from ledger.votes import decode_vote
from tests.unit.chain_helpers import Driver, consortium
from tests.unit.test_operators_core import Network, anchors, make_core


def test_a_write_set_is_rebuilt_from_its_canonical_bytes() -> None:
    plan = consortium(4, operators=2)
    writes = genesis_writes(plan.genesis)  # every kind of record a genesis writes
    again = WriteSet.from_canonical(writes.canonical())
    assert again == writes and again.digest() == writes.digest()
    assert WriteSet.from_canonical(writes.canonical(), certified=True) == writes
    assert again.encoded() == writes.canonical()
    with pytest.raises(DecodeError):
        WriteSet.from_canonical(writes.canonical()[:-3])
    with pytest.raises(DecodeError):
        WriteSet.from_canonical(b"\x02\x0aabc/d\x02")  # a record cut short


def test_a_feed_rebuilds_exactly_the_executed_block() -> None:
    plan = consortium(4)
    driver = Driver(plan)
    gov = driver.gov("inst-0")
    raws = [
        *(
            driver.tx(gov, "AnchorData", {"data_id": f"d{i}", "sha256": bytes(32), "metadata": ""})
            for i in range(3)
        ),
        driver.tx(gov, "AnchorData", {"data_id": "x", "sha256": bytes(32), "metadata": ""}, 0),
    ]
    fresh = LedgerMachine(plan.genesis)
    block = driver.cut(raws)
    executed = driver.machine.apply(block)
    assert executed.results[-1].code.name == "BAD_NONCE"

    def rebuild(raw: bytes) -> ExecutedBlock | None:
        return apply_feed(
            decode_feed(raw),
            block,
            prev_hash=fresh.last_hash,
            prev_root=fresh.state.root,
            validators=fresh.validator_set(),
            final_hash=executed.block_hash,
        )

    feed = encode_feed(executed)
    rebuilt = rebuild(feed)
    assert rebuilt is not None and rebuilt.block_hash == executed.block_hash
    assert rebuilt.results == executed.results and rebuilt.writes == executed.writes
    fresh.commit(rebuilt)
    assert fresh.state.root == driver.machine.state.root
    fresh = LedgerMachine(plan.genesis)
    # another result code, other writes or undecodable writes give another hash: unused
    head = len(feed) - len(executed.writes.encoded())
    code_at = head - 1
    assert rebuild(feed[:code_at] + b"\x00" + feed[code_at + 1 :]) is None
    other = WriteSet(entries=executed.writes.entries[:-1])
    assert rebuild(feed[:head] + other.canonical()) is None
    assert rebuild(feed[:head] + b"\xff\xff") is None
    with pytest.raises(DecodeError):  # leaves of a block of another size
        rebuild(feed[:12] + (3).to_bytes(4, "big") + feed[16 : 16 + 3 * LEAF])
    with pytest.raises(DecodeError):  # a result code that does not exist
        rebuild(feed[:code_at] + b"\xee" + feed[code_at + 1 :])
    for bad in (b"", b"PSF1" + bytes(8), b"XXXX" + feed[4:], feed[:20]):
        with pytest.raises(DecodeError):
            decode_feed(bad)


def test_a_feed_too_large_for_a_message_is_a_stub_that_fits_no_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = consortium(4)
    driver = Driver(plan)
    gov = driver.gov("inst-0")
    block = driver.cut(
        [driver.tx(gov, "AnchorData", {"data_id": "a", "sha256": bytes(32), "metadata": ""})]
    )
    executed = driver.machine.apply(block)
    monkeypatch.setattr("ledger.standby_feed.MAX_FEED_BYTES", 100)
    stub = decode_feed(encode_feed(executed))
    assert stub.height == 1 and stub.count == 0 and stub.writes == b""
    buffer = FeedBuffer()
    buffer.add(encode_feed(executed), above=0)
    fresh = LedgerMachine(plan.genesis)
    assert buffer.has(1)
    applied = buffer.apply(
        block,
        prev_hash=fresh.last_hash,
        prev_root=fresh.state.root,
        validators=fresh.validator_set(),
        final_hash=executed.block_hash,
    )
    assert applied is None
    assert not buffer.has(1)
    buffer.add(encode_feed(executed), above=0)
    buffer.add(b"not a feed", above=0)
    assert buffer.has(1) and buffer.malformed == 1
    buffer.add(encode_feed(executed), above=1)  # the standby ran height 1 meanwhile
    assert not buffer.has(1)


def run_block(
    cores: dict[tuple[str, int], ValidatorCore], raws: list[bytes]
) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """Feed ``raws`` to every core; return the feeds (sender, raw) and votes they sent."""
    feeds, votes = [], []
    for offset, raw in enumerate(raws):
        for core in cores.values():
            for action in core.on_tx(offset, 1000, raw):
                if isinstance(action, SendFeed):
                    feeds.append((core.operator.key_id, action.raw))
                elif isinstance(action, SendVote):
                    votes.append(action.raw)
    return feeds, votes


def test_a_standby_applies_only_final_blocks_and_does_not_vote() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [("inst-0", 0), ("inst-0", 1), ("inst-1", 0), ("inst-2", 0)]
    cores = {n: make_core(plan, n) for n in nodes}
    feeds, votes = run_block(cores, anchors(plan, 5))
    primaries = [cores[n].operator.key_id for n in nodes if n[1] == 0]
    assert sorted(s for s, _ in feeds) == sorted(primaries)  # one each: all have standbys
    standby, primary = cores[("inst-0", 1)], cores[("inst-0", 0)]
    for sender, raw in feeds:
        assert standby.on_feed(sender, raw) == []
    assert standby.cut_height == 0  # its primary's feed alone is not enough: not final
    for offset, vote in enumerate(votes):
        actions = standby.on_vote(offset, vote)
        assert not [a for a in actions if isinstance(a, SendVote | SendFeed)]
    assert standby.cut_height == standby.final_height == 1
    assert standby.counters.applied == 1 and standby.voted_height == 0
    assert standby.machine.state.root == primary.machine.state.root
    assert standby.final.final_state.root == standby.machine.state.root


def test_a_feed_that_misses_the_final_hash_makes_the_standby_execute_the_block() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [("inst-0", 0), ("inst-0", 1), ("inst-1", 0), ("inst-2", 0), ("inst-1", 1)]
    cores = {n: make_core(plan, n) for n in nodes}
    feeds, votes = run_block(cores, anchors(plan, 5))
    standby, other = cores[("inst-0", 1)], cores[("inst-1", 1)]
    (sender, raw) = next(f for f in feeds if f[0] == cores[("inst-0", 0)].operator.key_id)
    forged = raw[:16] + bytes(32) + raw[48:]  # its first entry's tx id replaced
    standby.on_feed(sender, forged)
    other.on_feed(sender, raw)  # another institution's primary: not this standby's
    assert not other.feeds.has(1)
    for offset, vote in enumerate(votes):
        standby.on_vote(offset, vote)
    assert standby.final_height == 1
    assert standby.counters.feed_misses == 1 and standby.counters.applied == 0
    assert standby.counters.optimistic == 1  # executed against the final hash instead
    assert standby.final.final_hash == cores[("inst-0", 0)].machine.last_hash


def test_one_operator_institutions_send_no_feeds() -> None:
    plan = consortium(4, max_block_txs=5)
    net = Network(plan, [(f"inst-{i}", 0) for i in range(4)])
    net.feed_tx(anchors(plan, 10))
    net.deliver_votes()
    assert net.feeds == [] and {c.final_height for c in net.cores.values()} == {2}


def two_blocks_voted_over_one_delay(net: Network, plan: ConsortiumPlan) -> int:
    """Blocks 1 and 2 through ``net``, its clock at 0 and at the takeover delay - 1 (inst-0's
    primary voted on both in between); returns the delay."""
    txs = anchors(plan, 10)
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.feed_tx(txs[:5])
    net.deliver_votes()
    net.tick(0)
    net.feed_tx(txs[5:])
    net.deliver_votes()  # the primary votes again: it is alive
    net.tick(delay - 1)
    return delay


def test_final_blocks_whose_feeds_are_late_run_without_them_and_the_standby_follows() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [("inst-0", 0), ("inst-0", 1), ("inst-1", 0), ("inst-2", 0)]
    net = Network(plan, nodes, route_feeds=False)  # the primary votes; its feeds are lost
    standby = net.cores[("inst-0", 1)]
    delay = two_blocks_voted_over_one_delay(net, plan)
    assert standby.cut_height == 0 and standby.following
    net.tick(delay)
    assert standby.following and standby.cut_height == standby.final_height == 2
    assert standby.counters.feed_misses == 2 and standby.counters.optimistic == 2
    assert standby.voted_height == 0


def test_a_standby_whose_primary_votes_waits_for_finality_however_long() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    net = Network(plan, [("inst-0", 0), ("inst-0", 1), ("inst-1", 0)])  # no quorum
    standby = net.cores[("inst-0", 1)]
    delay = two_blocks_voted_over_one_delay(net, plan)
    net.tick(delay)  # its block waited the delay, but the primary voted within it
    assert standby.following and standby.cut_height == 0 and net.votes
    assert not [v for v in net.votes if decode_vote(v).operator_key_id == standby.operator.key_id]
    net.tick(2 * delay - 1)  # the primary is silent from now on: the standby takes over
    assert standby.eager and standby.cut_height == 2 and standby.voted_height == 2
