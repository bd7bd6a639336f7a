"""Institutions with several block operators, on the real broker (D38, D47, D52, D57).

Every operator of an institution runs its own validator process with its own key; the
first-ranked votes and its standbys apply the blocks it executed once they are final (they
vote when it is silent), an institution counts once in the quorum, and only the first live
operator in the consortium's publication order publishes final blocks (the copies carry
their publisher in the ``pantheon-operator`` header).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.consortium import Consortium, Load, new_key
from ledger.finality import verify_finalized
from ledger.key_proofs import add_operator_args
from ledger.results import ResultCode
from ledger.votes import decode_vote, sign_vote
from streams.validator import PUBLISHER_HEADER
from tests.integration.test_consensus import (
    blocks_max_height,
    check_chain,
    check_votes,
    settled_height,
    tx_id,
    wait_included,
)

pytestmark = pytest.mark.integration


MakeConsortium = Callable[..., Consortium]


@pytest.fixture
def make(bootstrap: str, unique: str, tmp_path: Path) -> Iterator[MakeConsortium]:
    """Consortia of ``n`` institutions with 200 ms markers; every process is killed at the
    end, pass or fail."""
    made: list[Consortium] = []

    def build(n: int, *, operators: int = 1, max_block_txs: int = 100) -> Consortium:
        c = Consortium(
            bootstrap,
            tmp_path / f"c{len(made)}",
            n,
            prefix=f"ops{unique}{len(made)}.",
            operators_per_institution=operators,
            block_interval_ms=200,
            max_block_txs=max_block_txs,
        )
        made.append(c)
        return c

    try:
        yield build
    finally:
        for c in made:
            c.close()


def publishers(c: Consortium) -> dict[int, list[bytes]]:
    """Height -> the operator key ids named by its FinalizedBlock copies, in log order."""
    out: dict[int, list[bytes]] = defaultdict(list)
    for msg in c.read_topic("blocks"):
        out[int(msg.key or b"0")].append(dict(msg.headers).get(PUBLISHER_HEADER, b""))
    return out


def certified_by(c: Consortium, height_above: int) -> dict[int, set[bytes]]:
    """Height -> operator key ids in its certificate, for heights above ``height_above``,
    each certificate verified against the oracle's validator set."""
    blocks = c.read_blocks()
    replay = c.replay()  # read after the blocks: it holds every height they hold
    out: dict[int, set[bytes]] = {}
    for _, raw, (header, _, _) in blocks:
        if header.height > height_above and header.height not in out:
            _, cert, _ = verify_finalized(raw, replay.validator_set(header.height))
            out[header.height] = {v.operator_key_id for v in cert.votes}
    return out


def test_killing_one_operator_of_every_institution_under_load_keeps_finality(
    make: MakeConsortium,
) -> None:
    c = make(4, operators=2)
    nodes = {inst: [c.start_operator(inst, op) for op in (0, 1)] for inst in c.institutions}
    everyone = [n for pair in nodes.values() for n in pair]
    c.wait_ready(everyone)
    key_of = {n: bytes.fromhex((c.status(n) or {})["operator_key_id"]) for n in everyone}
    primary = {i: min(pair, key=lambda n: key_of[n]) for i, pair in nodes.items()}
    standby = {i: max(pair, key=lambda n: key_of[n]) for i, pair in nodes.items()}
    assert all((c.status(primary[i]) or {})["rank"] == 0 for i in c.institutions)
    assert all((c.status(standby[i]) or {})["rank"] == 1 for i in c.institutions)
    inst_of = {key_of[n]: i for i, pair in nodes.items() for n in pair}

    load = Load(c, c.gov_key("inst-1"), rate=40.0, tag="ops").start()
    try:
        c.wait_final(6, everyone, timeout=120)
        # The primaries vote; the standbys apply their primaries' feeds and do not (D52);
        # inst-1's primary alone publishes (everybody else holds, D47).
        voters = {decode_vote(m.value).operator_key_id for m in c.read_topic("votes")}
        assert voters == {key_of[n] for n in primary.values()}
        assert all((c.status(n) or {})["applied"] > 0 for n in standby.values())
        # ... and never read the tx log (D57)
        assert all((c.status(n) or {})["tx_messages_read"] == 0 for n in standby.values())
        assert not any((c.status(n) or {})["reads_tx"] for n in standby.values())
        # ... and read votes, blocks and feeds on their patient consumer (D64)
        assert all((c.status(n) or {})["patient_reads"] for n in standby.values())
        assert not any((c.status(n) or {})["patient_reads"] for n in primary.values())
        before = publishers(c)
        standby_keys = {key_of[n] for n in standby.values()}
        first = key_of[primary["inst-1"]]
        dupes = [h for h, pubs in before.items() if set(pubs) - {first}]
        assert len(dupes) < len(before) / 2, (dupes, before)
        assert all(first in pubs for pubs in before.values()), before

        for inst in c.institutions:  # SIGKILL the first-ranked operator of every institution
            c.kill(primary[inst])
        killed_at = blocks_max_height(c)
        survivors = list(standby.values())
        c.wait_final(killed_at + 5, survivors, timeout=120)
        c.wait_until(
            lambda: blocks_max_height(c) >= killed_at + 5,
            timeout=60,
            what="blocks published by the standbys",
            alive=survivors,
        )
        c.wait_until(  # the first standby in the publication order took over
            lambda: bool((c.status(standby["inst-1"]) or {}).get("publishing")),
            timeout=10,
            what="inst-1's standby to report that it publishes",
            alive=survivors,
        )
    finally:
        sent = load.stop()
    wait_included(c, Counter(tx_id(r) for r in sent), timeout=120)
    top = settled_height(c)
    c.wait_final(top, survivors, timeout=60)
    top, _replay = check_chain(c, min_copies=1)
    assert all((c.status(n) or {})["tx_messages_read"] > 0 for n in survivors)  # took over
    assert not any((c.status(n) or {})["patient_reads"] for n in survivors)  # eager: promptly
    # Every height was published (no gap at the takeover), after the kill by inst-1's standby
    after = publishers(c)
    assert all(after[h] for h in range(1, top + 1)), after
    took_over = key_of[standby["inst-1"]]
    assert any(took_over in after[h] for h in range(killed_at + 1, top + 1)), after
    assert {inst_of.get(k) for pubs in after.values() for k in pubs} <= set(c.institutions)
    # ... and the blocks after the primaries' last votes were certified by the standbys'
    # votes, one per institution.
    primary_keys = {key_of[n] for n in primary.values()}
    last_primary_vote = max(
        v.height
        for m in c.read_topic("votes")
        if (v := decode_vote(m.value)).operator_key_id in primary_keys
    )
    certs = certified_by(c, last_primary_vote)
    assert certs and all(keys <= standby_keys and len(keys) == 3 for keys in certs.values())
    check_votes(c, set(key_of.values()))
    assert all(code == ResultCode.OK for got in c.final_entries().values() for _, code in got)


def test_an_added_operator_counts_until_it_is_removed(make: MakeConsortium) -> None:
    c = make(2, max_block_txs=50)  # quorum 2 of 2: nothing is final without inst-2's vote
    c.start_all()
    c.wait_ready(c.institutions)
    gov2, added = c.gov_key("inst-2"), new_key()
    add = c.tx(
        gov2, "AddOperator", add_operator_args(added, chain_id=c.chain_id, institution_id="inst-2")
    )
    c.send([add])
    wait_included(c, Counter([tx_id(add)]))
    assert c.final_entries()[tx_id(add)][0][1] == ResultCode.OK
    c.add_operator_keystore("inst-2.new", "inst-2", [added])
    c.start("inst-2", 0, node="inst-2.new")
    c.wait_ready(["inst-2.new"])

    load = Load(c, c.gov_key("inst-1"), rate=30.0, tag="opsadd").start()
    try:
        c.wait_final(c.final_height("inst-1") + 2, ["inst-1", "inst-2", "inst-2.new"])
        assert c.stop("inst-2") == 0  # from now on inst-2 votes only with the added key
        stopped_at = max(blocks_max_height(c), (c.status("inst-2") or {})["voted_height"])
        c.wait_final(stopped_at + 3, ["inst-1", "inst-2.new"], timeout=90)
        counted = certified_by(c, stopped_at)
        assert counted and all(added.key_id in keys for keys in counted.values())

        remove = c.tx(gov2, "RemoveOperator", {"operator_key_id": added.key_id})
        c.send([remove])
        wait_included(c, Counter([tx_id(remove)]))
        ((removed_at, code),) = c.final_entries()[tx_id(remove)]
        assert code == ResultCode.OK
        # From removed_at + 1 on, the added key is no operator: nothing is final while
        # inst-2's remaining operator is down, even with a valid vote of the removed key.
        stalled = settled_height(c)
        assert stalled == removed_at
        replay = c.replay()
        assert replay.height > removed_at, "no block was cut after the removal"
        late = sign_vote(
            added, height=removed_at + 1, block_hash=replay.block(removed_at + 1).block_hash
        )
        producer = c.producer()
        producer.produce(c.topic("votes"), key=str(removed_at + 1).encode(), value=late.encode())
        producer.flush(10)
        time.sleep(3)
        assert blocks_max_height(c) == removed_at
        c.check_alive(["inst-1", "inst-2.new"])
        assert not (c.status("inst-2.new") or {})["diverged"]

        c.restart("inst-2")
        c.wait_final(removed_at + 3, ["inst-1", "inst-2"], timeout=90)
    finally:
        sent = load.stop()
    wait_included(c, Counter(tx_id(r) for r in sent), timeout=120)
    top, _ = check_chain(c)
    after = certified_by(c, removed_at)
    inst2_op = c.operator_key("inst-2").key_id
    assert after and all(added.key_id not in k and inst2_op in k for k in after.values())
    # The added operator's own process stopped voting once it was removed.
    own = {
        v.height
        for m in c.read_topic("votes")
        if (v := decode_vote(m.value)).operator_key_id == added.key_id and v != late
    }
    assert own and max(own) <= removed_at < top


def forged_feed(height: int) -> bytes:
    """A well-formed feed of ``height`` with one entry whose leaf and write set are junk
    (``ledger.standby_feed`` wire format): it cannot rebuild any certified block."""
    head = b"PSF2" + height.to_bytes(8, "big") + bytes(24)
    return head + (1).to_bytes(4, "big") + bytes(4) + bytes(32) + b"\x00"


def test_a_standby_reads_no_tx_ignores_forged_feeds_and_takes_over_after_sigkill(
    make: MakeConsortium,
) -> None:
    """D57, one institution with two operators (nothing is final without it): the standby
    follows without reading the tx log, forged feeds change nothing, and after its primary is
    SIGKILLed it reads the tx log from the block boundary after its last block (it learns of
    the pending work from the log's end alone), so no height is lost or applied twice."""
    c = make(1, operators=2, max_block_txs=20)
    nodes = [c.start_operator("inst-1", op) for op in (0, 1)]
    c.wait_ready(nodes)
    key_of = {n: bytes.fromhex((c.status(n) or {})["operator_key_id"]) for n in nodes}
    primary, standby = sorted(nodes, key=lambda n: key_of[n])
    load = Load(c, c.gov_key("inst-1"), rate=40.0, tag="solo").start()
    try:
        c.wait_final(3, nodes, timeout=60)
        # forged feeds of the next heights, under the primary's key (as anyone allowed to
        # write the topic could): each is tried against the final hash and dropped
        ahead = c.final_height(primary)
        producer = c.producer()
        for height in range(ahead + 1, ahead + 30):
            producer.produce(c.topic("feeds"), key=key_of[primary], value=forged_feed(height))
        producer.flush(10)
        c.wait_final(ahead + 30, nodes, timeout=90)
        seen = c.status(standby) or {}
        assert seen["applied"] >= 30, seen  # forged ones tried first were dropped (misses)
        assert seen["tx_messages_read"] == 0 and not seen["reads_tx"], seen
        assert seen["patient_reads"], seen  # votes and feeds on the patient consumer (D64)
        assert not seen["diverged"]

        c.kill(primary)
        killed_at = blocks_max_height(c)
        c.wait_final(killed_at + 5, [standby], timeout=90)
    finally:
        sent = load.stop()
    wait_included(c, Counter(tx_id(r) for r in sent), timeout=120)
    top = settled_height(c)
    c.wait_final(top, [standby], timeout=60)
    top, replay = check_chain(c, min_copies=1)
    entries = c.final_entries()
    assert all(len(entries[tx_id(r)]) == 1 for r in sent)  # each in one block, once
    after = c.status(standby) or {}
    assert after["reads_tx"] and not after["diverged"] and after["final_height"] == top
    assert not after["patient_reads"]  # eager: its votes and feeds read promptly again
    # it started reading right after a block it had applied: a block boundary
    start = after["tx_read_from"]
    boundaries = {replay.block(h).header.last_offset + 1 for h in range(1, top + 1)}
    assert start in boundaries and start > 0, (start, sorted(boundaries)[-5:])
    assert after["tx_messages_read"] > 0
    check_votes(c, set(key_of.values()))
