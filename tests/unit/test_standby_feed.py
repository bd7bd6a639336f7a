"""A standby applies its primary's executed blocks once final, never trusting them (D52)."""

from __future__ import annotations

import pytest

from ledger.cutter import TimeToCut
from ledger.errors import DecodeError
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.genesis import ConsortiumPlan, genesis_writes
from ledger.publication import takeover_delay_ms
from ledger.standby_feed import (
    FeedBuffer,
    apply_feed,
    decode_feed,
    encode_feed,
)
from ledger.state import WriteSet
from ledger.validator_core import SendFeed, SendVote
from ledger.votes import decode_vote
from tests.unit.chain_helpers import Driver, consortium
from tests.unit.test_operators_core import Network, anchors


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
    stale = TimeToCut(chain_id="test-chain", height=7, producer=b"x").encode()  # not an entry
    raws = [
        *(
            driver.tx(gov, "AnchorData", {"data_id": f"d{i}", "sha256": bytes(32), "metadata": ""})
            for i in range(3)
        ),
        stale,
        driver.tx(gov, "AnchorData", {"data_id": "x", "sha256": bytes(32), "metadata": ""}, 0),
    ]
    fresh = LedgerMachine(plan.genesis)
    block = driver.cut(raws)
    executed = driver.machine.apply(block)
    assert executed.results[-1].code.name == "BAD_NONCE"

    def rebuild(raw: bytes) -> ExecutedBlock | None:
        return apply_feed(
            decode_feed(raw),
            prev_hash=fresh.last_hash,
            prev_root=fresh.state.root,
            validators=fresh.validator_set(),
            final_hash=executed.block_hash,
        )

    feed = encode_feed(executed)
    assert decode_feed(feed).skipped == (3, 5)  # the stale marker and the cutting one
    rebuilt = rebuild(feed)  # no cut block needed: the feed carries the range (D57)
    assert rebuilt is not None and rebuilt.block_hash == executed.block_hash
    assert rebuilt.results == executed.results and rebuilt.writes == executed.writes
    assert rebuilt.header == executed.header
    fresh.commit(rebuilt)
    assert fresh.state.root == driver.machine.state.root
    fresh = LedgerMachine(plan.genesis)
    # another result code, other writes, another range or timestamp give another hash
    head = len(feed) - len(executed.writes.encoded())
    code_at = head - 1
    assert rebuild(feed[:code_at] + b"\x00" + feed[code_at + 1 :]) is None
    other = WriteSet(entries=executed.writes.entries[:-1])
    assert rebuild(feed[:head] + other.canonical()) is None
    assert rebuild(feed[:head] + b"\xff\xff") is None
    later = (executed.header.timestamp_ms + 1).to_bytes(8, "big", signed=True)
    assert rebuild(feed[:28] + later + feed[36:]) is None
    moved = feed[:12] + (1).to_bytes(8, "big") + (6).to_bytes(8, "big") + feed[28:44]
    assert rebuild(moved + (4).to_bytes(8, "big") + (6).to_bytes(8, "big") + feed[60:]) is None
    with pytest.raises(DecodeError):  # a result code that does not exist
        rebuild(feed[:code_at] + b"\xee" + feed[code_at + 1 :])
    with pytest.raises(DecodeError):  # skipped offsets that leave the range unfilled
        decode_feed(feed[:40] + (1).to_bytes(4, "big") + feed[44:52] + feed[60:])
    with pytest.raises(DecodeError):  # ... or outside it
        decode_feed(feed[:44] + (9).to_bytes(8, "big") + feed[52:])
    for bad in (b"", b"PSF2" + bytes(8), b"XXXX" + feed[4:], feed[:50], b"PSF1" + feed[4:]):
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

    def apply(height: int) -> ExecutedBlock | None:
        return buffer.apply(
            height,
            prev_hash=fresh.last_hash,
            prev_root=fresh.state.root,
            validators=fresh.validator_set(),
            final_hash=executed.block_hash,
        )

    assert buffer.has(1)
    assert apply(1) is None
    assert not buffer.has(1)
    monkeypatch.setattr("ledger.standby_feed.MAX_FEED_BYTES", 1_000_000)
    buffer.add(encode_feed(executed), above=0)
    buffer.add(b"not a feed", above=0)
    assert buffer.has(1) and buffer.malformed == 1
    buffer.add(encode_feed(executed), above=1)  # the standby ran height 1 meanwhile
    assert not buffer.has(1)
    # a forged feed of the height, before or after the real one, cannot push it out
    forged = encode_feed(executed)[:-2] + b"\x00\x00"
    for order in ([forged, encode_feed(executed)], [encode_feed(executed), forged]):
        for raw in order:
            buffer.add(raw, above=0)
        applied = apply(1)
        assert applied is not None and applied.block_hash == executed.block_hash


def test_a_standby_applies_only_final_blocks_does_not_vote_and_reads_no_tx() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [("inst-0", 0), ("inst-0", 1), ("inst-1", 0), ("inst-2", 0)]
    net = Network(plan, nodes)
    net.feed_tx(anchors(plan, 5))
    primaries = [net.cores[n].operator.key_id for n in nodes if n[1] == 0]
    assert sorted(s for s, _ in net.feeds) == sorted(primaries)  # one each: all have standbys
    standby = net.cores[("inst-0", 1)]
    for sender, raw in net.feeds:
        assert standby.on_feed(sender, raw) == []
    assert standby.cut_height == 0  # a primary's feed alone (before finality) is not enough
    assert net.tx_given[("inst-0", 1)] == 0 and not standby.reads_tx  # D57
    net.feeds = []
    for offset, vote in enumerate(net.votes):
        actions = standby.on_vote(offset, vote)
        assert not [a for a in actions if isinstance(a, SendVote | SendFeed)]
    assert standby.cut_height == standby.final_height == 1
    assert standby.counters.applied == 1 and standby.voted_height == 0
    primary = net.cores[("inst-0", 0)]
    assert standby.machine.state.root == primary.machine.state.root
    assert standby.final.final_state.root == standby.machine.state.root
    assert standby.final.next_tx_offset == 5
    assert net.tx_given[("inst-0", 1)] == 0 and not standby.reads_tx


def test_a_forged_feed_changes_nothing_and_the_real_one_is_applied() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [("inst-0", 0), ("inst-0", 1), ("inst-1", 0), ("inst-2", 0), ("inst-1", 1)]
    net = Network(plan, nodes)
    standby, other = net.cores[("inst-0", 1)], net.cores[("inst-1", 1)]
    primary = net.cores[("inst-0", 0)]
    net.feed_tx(anchors(plan, 5))
    ((sender, raw),) = [f for f in net.feeds if f[0] == primary.operator.key_id]
    forged = raw[: -len(primary.executed[1].writes.encoded())] + WriteSet(entries=()).canonical()
    root = standby.machine.state.root
    standby.on_feed(sender, forged)  # written by anyone allowed to write the topic
    assert standby.machine.state.root == root
    net.deliver_votes()  # the real feeds, then the votes
    assert standby.final_height == 1 and standby.counters.applied == 1
    assert standby.counters.feed_misses == 0 and standby.following
    assert standby.final.final_hash == primary.final.final_hash
    assert not other.feeds.has(2)  # another institution's primary's feeds are not kept


def test_a_feed_that_misses_the_final_hash_is_dropped_then_the_real_one_or_the_log_serves() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [("inst-0", 0), ("inst-0", 1), ("inst-1", 0), ("inst-2", 0)]
    net = Network(plan, nodes, route_feeds=False)
    standby, primary = net.cores[("inst-0", 1)], net.cores[("inst-0", 0)]
    txs = anchors(plan, 10)
    net.feed_tx(txs[:5])
    real = encode_feed(primary.executed[1])
    forged = real[:60] + bytes(32) + real[92:]  # its first entry's tx id replaced
    standby.on_feed(primary.operator.key_id, forged)  # the only feed when 1 becomes final
    net.deliver_votes()
    assert standby.final_height == 0 and standby.following  # nothing applied, nothing read
    assert standby.counters.feed_misses == 1 and net.tx_given[("inst-0", 1)] == 0
    standby.on_feed(primary.operator.key_id, real)  # the real one, late
    assert standby.final_height == 1 and standby.counters.applied == 1
    # a miss and no real feed: after the delay it executes the block from the tx log
    net.feed_tx(txs[5:])
    standby.on_feed(primary.operator.key_id, forged[:4] + (2).to_bytes(8, "big") + forged[12:])
    net.deliver_votes()
    assert standby.final_height == 1 and standby.counters.feed_misses == 2
    delay = takeover_delay_ms(plan.genesis.params.block_interval_ms)
    net.tick(0)
    net.tick(delay)
    assert standby.eager and standby.final_height == 2 and standby.counters.optimistic == 1
    assert net.tx_given[("inst-0", 1)] == 5  # from the block boundary after height 1
    assert standby.final.final_hash == primary.final.final_hash


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


def test_a_standby_without_feeds_catches_up_from_the_tx_log_and_follows_again() -> None:
    plan = consortium(4, operators=2, max_block_txs=5)
    nodes = [("inst-0", 0), ("inst-0", 1), ("inst-1", 0), ("inst-2", 0)]
    net = Network(plan, nodes, route_feeds=False)  # the primary votes; its feeds are lost
    standby, node = net.cores[("inst-0", 1)], ("inst-0", 1)
    delay = two_blocks_voted_over_one_delay(net, plan)
    assert standby.cut_height == 0 and standby.following and net.tx_given[node] == 0
    net.tick(delay)  # final blocks waited a delay without a feed: read the tx log, run them
    assert standby.eager and standby.cut_height == standby.final_height == 2
    assert net.tx_given[node] == 10 and standby.counters.optimistic == 2
    assert standby.voted_height == 0  # they were final: no vote on history
    txs = anchors(plan, 20)
    net.feed_tx(txs[10:15])
    net.deliver_votes()  # its primary votes on height 3: caught up, it follows again
    assert standby.following and not standby.reads_tx and standby.final_height == 3
    net.route_feeds = True
    net.feed_tx(txs[15:20])
    net.deliver_votes()
    assert net.tx_given[node] == 15  # not one tx message more (D57)
    assert standby.final_height == 4 and standby.counters.applied == 1
    assert standby.final.final_hash == net.cores[("inst-0", 0)].final.final_hash


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
