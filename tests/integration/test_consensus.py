"""Consensus of real validator processes on the real broker (DESIGN.md section 4).

Each test runs its own chain (genesis, keystores, topic prefix) with validators as OS processes
(``harness/consortium.py``), and checks what they publish against an oracle that re-cuts and
re-executes the tx log with the pure core in the test process.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from harness.consortium import (
    Consortium,
    HarnessError,
    Load,
    LogMessage,
    Replay,
    anchor_args,
    new_key,
    replay_log,
)
from infra.procs import descendants, pid_alive
from ledger.cutter import CutBlock, Entry, TimeToCut
from ledger.errors import DecodeError
from ledger.execution import LedgerMachine
from ledger.finality import verify_finalized
from ledger.hashing import sha256
from ledger.key_proofs import propose_member_args
from ledger.keys import KeyPair
from ledger.members import inst_key
from ledger.results import ResultCode
from ledger.tx import TxRejected, parse_tx
from ledger.votes import decode_vote, sign_vote
from runtime.kafka_config import consumer_config, producer_config
from streams.validator import PUBLISHER_HEADER
from tests.unit.chain_helpers import Driver
from tests.unit.chain_helpers import consortium as plan_of

pytestmark = pytest.mark.integration

MakeConsortium = Callable[..., Consortium]
STATUS_FIELDS = {
    "institution",
    "operator_key_id",
    "cut_height",
    "voted_height",
    "final_height",
    "diverged",
    "caught_up",
    "pid",
    "updated_ms",
}


@pytest.fixture
def make_consortium(bootstrap: str, unique: str, tmp_path: Path) -> Iterator[MakeConsortium]:
    """Build consortia for one test; every process is killed at the end, pass or fail."""
    made: list[Consortium] = []

    def make(n: int = 4, *, block_interval_ms: int = 200, max_block_txs: int = 100) -> Consortium:
        consortium = Consortium(
            bootstrap,
            tmp_path / f"c{len(made)}",
            n,
            prefix=f"cons{unique}{len(made)}.",
            block_interval_ms=block_interval_ms,
            max_block_txs=max_block_txs,
        )
        made.append(consortium)
        return consortium

    try:
        yield make
    finally:
        for consortium in made:
            consortium.close()


# -- checks shared by the tests ---------------------------------------------------------------


def tx_id(raw: bytes) -> bytes:
    """The id of a well-formed envelope (signature not required to verify)."""
    return parse_tx(raw).tx_id


def blocks_max_height(c: Consortium) -> int:
    """The highest height in the blocks topic (0 if none)."""
    return max(c.blocks_by_height(), default=0)


def settled_height(c: Consortium, *, quiet: float = 1.5, timeout: float = 15.0) -> int:
    """The blocks topic's highest height once it stopped growing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = blocks_max_height(c), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = blocks_max_height(c)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise HarnessError(f"the final height kept moving for {timeout:.0f}s\n{c.tails()}")


def wait_included(c: Consortium, expected: Counter[bytes], timeout: float = 90.0) -> None:
    """Wait until each tx id is in final blocks at least as many times as ``expected`` says."""

    def included() -> bool:
        entries = c.final_entries()
        return all(len(entries.get(t, [])) >= k for t, k in expected.items())

    c.wait_until(included, timeout=timeout, what=f"{len(expected)} tx ids in final blocks")


def check_chain(c: Consortium, *, min_copies: int = 1) -> tuple[int, Replay]:
    """Check the blocks topic against the oracle; returns (top height, replay).

    Heights 1..H contiguous; one distinct FinalizedBlock per height (at least ``min_copies``
    copies); each certificate verifies against the oracle's validator set and its header is the
    oracle's header at that height.
    """
    by_height = c.blocks_by_height()
    assert by_height, "no final block"
    top = max(by_height)
    assert sorted(by_height) == list(range(1, top + 1)), f"gap in heights: {sorted(by_height)}"
    conflicting = {h: len(set(raws)) for h, raws in by_height.items() if len(set(raws)) != 1}
    assert not conflicting, f"different FinalizedBlock bytes at heights {conflicting}"
    few = {h: len(raws) for h, raws in by_height.items() if len(raws) < min_copies}
    assert not few, f"fewer than {min_copies} copies at heights {few}"
    replay = c.replay()
    assert replay.height >= top, f"oracle cut {replay.height} blocks, {top} are final"
    for height, raws in by_height.items():
        header, _cert, _results = verify_finalized(raws[0], replay.validator_set(height))
        assert header == replay.block(height).header, f"height {height} differs from the oracle"
    keys = {(key, header.height) for key, _, (header, _, _) in c.read_blocks()}
    assert all(key == str(height).encode() for key, height in keys), keys
    return top, replay


def operators(c: Consortium, insts: list[str] | None = None) -> set[bytes]:
    """Operator key ids of ``insts`` (default: every institution with a keystore)."""
    return {c.operator_key(i).key_id for i in (insts if insts is not None else c.institutions)}


def check_votes(c: Consortium, operators: set[bytes]) -> int:
    """No operator in ``operators`` ever signed two hashes for one height (restarts
    included), and every vote is keyed by its height; returns the number of votes checked."""
    signed: dict[tuple[bytes, int], set[bytes]] = {}
    for msg in c.read_topic("votes"):
        try:
            vote = decode_vote(msg.value)
        except DecodeError:
            continue
        if vote.operator_key_id in operators:
            assert msg.key == str(vote.height).encode(), (msg.key, vote.height)
            signed.setdefault((vote.operator_key_id, vote.height), set()).add(vote.block_hash)
    twice = {(k.hex()[:12], h) for (k, h), hashes in signed.items() if len(hashes) > 1}
    assert not twice, f"operators signed two hashes at one height: {twice}"
    return len(signed)


def wait_copies(c: Consortium, heights: range, copies: int, timeout: float = 30.0) -> None:
    """Wait until each height in ``heights`` has at least ``copies`` FinalizedBlock messages."""

    def enough() -> bool:
        by_height = c.blocks_by_height()
        return all(len(by_height.get(h, [])) >= copies for h in heights)

    c.wait_until(enough, timeout=timeout, what=f"{copies} copies of heights {heights}")


def publishers(c: Consortium) -> dict[int, list[bytes]]:
    """Height -> the operator key ids named by its FinalizedBlock copies, in log order."""
    out: dict[int, list[bytes]] = {}
    for msg in c.read_topic("blocks"):
        label = dict(msg.headers).get(PUBLISHER_HEADER, b"")
        out.setdefault(int(msg.key or b"0"), []).append(label)
    return out


def settle(c: Consortium, sent: list[bytes], insts: list[str]) -> int:
    """After a load: every transaction sent is in a final block, the final height stopped
    moving and ``insts`` reached it, healthy; returns that height."""
    wait_included(c, Counter(tx_id(r) for r in sent))
    top = settled_height(c)
    c.wait_final(top, insts, timeout=60)
    assert_healthy(c, insts)
    return top


def start_load(
    c: Consortium, inst: str, *, signer: KeyPair | None = None, rate: float = 30.0
) -> Load:
    """Start steady AnchorData traffic from ``inst``'s governance key (or ``signer``)."""
    return Load(c, signer or c.gov_key(inst), rate=rate, tag=f"load-{inst}").start()


def assert_healthy(c: Consortium, insts: list[str]) -> None:
    """Running, and not diverged."""
    c.check_alive(insts)
    for inst in insts:
        status = c.status(inst)
        assert status is not None and not status["diverged"], (inst, status)
        assert set(status) >= STATUS_FIELDS, STATUS_FIELDS - set(status)
        assert status["institution"] == inst and status["pid"] == c.pid(inst)
        assert status["operator_key_id"] == c.operator_key(inst).key_id.hex()
        assert status["cut_height"] >= status["final_height"], status


def assert_stalled(c: Consortium, alive: list[str], *, pause: float = 3.0) -> int:
    """Finality stops: no new final height for ``pause`` seconds while txs are pending."""
    stalled = settled_height(c)
    time.sleep(pause)
    assert blocks_max_height(c) == stalled, "a block became final without a quorum"
    assert all(c.final_height(i) <= stalled for i in alive), {i: c.status(i) for i in alive}
    replay = c.replay()
    assert replay.height > stalled or replay.pending_entries > 0, "nothing was pending"
    assert_healthy(c, alive)
    return stalled


# -- the oracle itself ------------------------------------------------------------------------


def test_replay_oracle_matches_the_pure_core_in_process() -> None:
    plan = plan_of(3, max_block_txs=3)
    driver = Driver(plan)
    gov = driver.gov("inst-0")
    raws = [driver.tx(gov, "AnchorData", anchor_args(f"d{i}")) for i in range(2)]
    marker = TimeToCut(chain_id=plan.genesis.params.chain_id, height=1, producer=b"p")
    full = [driver.tx(gov, "AnchorData", anchor_args(f"e{i}")) for i in range(3)]
    log = [*raws, marker.encode(), b"garbage", *full[:2], full[2], full[0]]
    messages = [
        LogMessage(offset=i, timestamp_ms=1000 + i, key=None, value=v) for i, v in enumerate(log)
    ]

    replay = replay_log(plan.genesis, messages)

    # Independently: cut by hand (a marker cuts block 1; three entries fill block 2 and 3).
    machine = LedgerMachine(plan.genesis)
    cuts = [(0, 2, [0, 1]), (3, 5, [3, 4, 5])]
    expected = []
    for height, (first, last, offsets) in enumerate(cuts, start=1):
        block = CutBlock(
            height=height,
            first_offset=first,
            last_offset=last,
            timestamp_ms=1000 + last,
            entries=tuple(Entry(offset=o, timestamp_ms=1000 + o, raw=log[o]) for o in offsets),
        )
        expected.append(machine.apply(block))
    assert replay.height == 2
    assert [b.block_hash for b in replay.blocks] == [b.block_hash for b in expected]
    assert [r.code for r in replay.block(2).results] == [
        ResultCode.MALFORMED,
        ResultCode.OK,
        ResultCode.OK,
    ]
    assert replay.pending_entries == 2
    assert replay.machine.state.root == machine.state.root
    assert replay.state_get("anchor/e1") is not None
    assert replay.validator_set(1).size == 3


def test_replay_oracle_reads_the_broker_log(make_consortium: MakeConsortium) -> None:
    c = make_consortium(n=4)
    gov = c.gov_key("inst-2")
    raws = [c.anchor(gov, f"k{i}") for i in range(3)]
    marker = TimeToCut(chain_id=c.chain_id, height=1, producer=b"test").encode()
    c.send([*raws, marker, b"junk", c.anchor(gov, "k3")])
    log = c.read_topic("tx")
    assert [m.value for m in log] == [*raws, marker, b"junk", log[-1].value]
    replay = c.replay()
    assert replay.height == 1 and replay.pending_entries == 2
    block = replay.block(1)
    assert block.header.timestamp_ms == log[3].timestamp_ms > 0
    assert [r.tx_id for r in block.results] == [tx_id(r) for r in raws]
    assert replay.validator_set(1).quorum == 3
    assert c.read_blocks() == [] and c.read_receipts() == []


# -- 1. throughput, exactly once, rejections ----------------------------------------------------


def test_thousand_transactions_become_final_exactly_once_everywhere(
    make_consortium: MakeConsortium,
) -> None:
    c = make_consortium(n=4)
    # Two validators verify signatures ahead in worker processes (D18): every validator
    # must still compute the same blocks, the bad signature below included.
    c.extra_args = {"inst-2": ["--verify-workers", "2"], "inst-4": ["--verify-workers", "1"]}
    c.start_all()
    c.wait_ready(c.institutions)
    per = 250

    def produce(inst: str) -> list[bytes]:
        key = c.gov_key(inst)
        producer = Producer(producer_config(c.bootstrap))
        raws = [c.anchor(key, f"{inst}-{i}") for i in range(per)]
        for raw in raws:
            while True:
                try:
                    producer.produce(c.topic("tx"), key=key.key_id, value=raw)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(30) == 0
        return raws

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        sent = dict(zip(c.institutions, pool.map(produce, c.institutions), strict=True))
    valid = [raw for raws in sent.values() for raw in raws]
    assert len({tx_id(r) for r in valid}) == 1000

    # Rejections, produced after the valid ones (the replay must follow its original).
    gov1 = c.gov_key("inst-1")
    unsigned = c.anchor(gov1, "bad-signature", nonce=per)
    bad_signature = unsigned[:-1] + bytes([unsigned[-1] ^ 0x01])
    replayed = sent["inst-1"][0]
    unknown = c.anchor(new_key(), "unknown-sender", nonce=0)
    forbidden = c.anchor(c.operator_key("inst-1"), "operator-may-not-anchor", nonce=0)
    garbage = b"garbage, not an envelope " + os.urandom(16)
    c.send([bad_signature, replayed, unknown, forbidden, garbage])

    expected: dict[bytes, list[ResultCode]] = {tx_id(r): [ResultCode.OK] for r in valid}
    expected[tx_id(replayed)] = [ResultCode.OK, ResultCode.BAD_NONCE]
    expected[tx_id(unsigned)] = [ResultCode.BAD_SIGNATURE]
    expected[tx_id(unknown)] = [ResultCode.UNKNOWN_SENDER]
    expected[tx_id(forbidden)] = [ResultCode.FORBIDDEN]
    expected[sha256(garbage)] = [ResultCode.MALFORMED]
    wait_included(c, Counter({t: len(codes) for t, codes in expected.items()}), timeout=120)
    top = blocks_max_height(c)
    c.wait_final(top, c.institutions, timeout=60)
    wait_copies(c, range(1, top + 1), copies=1)
    elapsed = time.monotonic() - started
    assert_healthy(c, c.institutions)

    top, replay = check_chain(c, min_copies=1)
    # One publisher for the consortium (D47): the first in the publication order published
    # every height (a copy from another is a takeover under load, which only duplicates).
    first = c.operator_key("inst-1").key_id
    assert all(first in labels for labels in publishers(c).values())
    assert check_votes(c, operators(c)) >= 3 * top
    entries = c.final_entries()
    assert {t: sorted(v[1] for v in got) for t, got in entries.items()} == {
        t: sorted(int(code) for code in codes) for t, codes in expected.items()
    }
    for raw in valid:
        assert len(entries[tx_id(raw)]) == 1 or raw == replayed
    # Every message of the tx log is an entry of one block or a marker.
    assert sum(len(b.results) for b in replay.blocks) == 1005
    assert replay.height == top and replay.pending_entries == 0
    final_header = next(d[0] for _, _, d in c.read_blocks() if d[0].height == top)
    assert final_header.state_root == replay.machine.state.root
    assert final_header.state_root == replay.block(top).header.state_root

    # Receipts: every entry of every final block, with the block's hash, and nothing else.
    from_blocks = {
        (r.tx_id, header.height, r.offset, int(r.code), header.hash())
        for _, _, (header, _, results) in c.read_blocks()
        for r in results
    }

    def receipts() -> set[tuple[bytes, int, int, int, bytes]]:
        return {
            (rec["tx_id"], rec["height"], rec["offset"], rec["result_code"], rec["block_hash"])
            for _, _, rec in c.read_receipts()
        }

    c.wait_until(lambda: receipts() >= from_blocks, timeout=30, what="every receipt")
    assert receipts() == from_blocks
    assert all(key == rec["tx_id"] for key, _, rec in c.read_receipts())

    # Kafka's own lag tools see each validator's progress (advisory offsets, D36).
    admin = AdminClient({"bootstrap.servers": c.bootstrap})

    def advised(inst: str) -> int:
        group = f"validator-{inst}-0"
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(c.topic("tx"), 0)])
        result = admin.list_consumer_group_offsets([request])[group].result(10)
        return int(result.topic_partitions[0].offset)

    c.wait_until(
        lambda: all(advised(inst) >= 1005 for inst in c.institutions),
        timeout=30,
        what="advisory offsets past every final transaction",
    )
    print(f"1,005 transactions final on 4 validators in {elapsed:.1f}s, {top} blocks")


# -- 2. one crash ---------------------------------------------------------------------------------


def test_finality_survives_one_crash_and_the_victim_catches_up(
    make_consortium: MakeConsortium,
) -> None:
    c = make_consortium(n=4)
    victim, others = "inst-3", ["inst-1", "inst-2", "inst-4"]
    c.extra_args = {victim: ["--verify-workers", "1"]}
    c.start_all()
    c.wait_ready(c.institutions)
    load = start_load(c, "inst-1")
    try:
        c.wait_final(3, c.institutions, timeout=60)
        victim_pid = c.pid(victim)
        assert victim_pid is not None
        helpers = descendants(victim_pid)
        assert helpers, "the victim runs a fork server and a signature worker"
        assert c.kill(victim) == -9
        # Its fork server and worker go with it (their pipes to it close).
        c.wait_until(
            lambda: not any(pid_alive(p) for p in helpers),
            timeout=30,
            what="the killed validator's worker processes to exit",
        )
        published_before = blocks_max_height(c)
        base = c.max_final(others)
        c.wait_final(base + 5, others, timeout=60)
        c.restart(victim)
        c.wait_ready([victim])
        target = c.max_final(others)
        c.wait_final(target, [victim], timeout=90)
        c.wait_until(  # the tx log keeps growing under load: on 2 busy cores, give it time
            lambda: bool((c.status(victim) or {}).get("caught_up")),
            timeout=90,
            what=f"{victim} caught up",
            alive=[victim],
        )
    finally:
        sent = load.stop()
    top = settle(c, sent, c.institutions)
    # Every height was published once by the first in the publication order (D47); the
    # restarted victim read the copies of the heights it replayed and republished none.
    wait_copies(c, range(published_before + 1, top + 1), copies=1)
    check_chain(c, min_copies=1)
    victim_key = c.operator_key(victim).key_id
    assert not any(victim_key in labels for labels in publishers(c).values())
    check_votes(c, operators(c))


def test_the_next_publisher_takes_over_when_the_publisher_is_killed(
    make_consortium: MakeConsortium,
) -> None:
    c = make_consortium(n=4)
    c.start_all()
    c.wait_ready(c.institutions)
    first, second = c.operator_key("inst-1").key_id, c.operator_key("inst-2").key_id
    load = start_load(c, "inst-3")
    try:
        c.wait_final(3, c.institutions, timeout=60)
        c.wait_until(
            lambda: bool((c.status("inst-1") or {}).get("publishing")),
            timeout=30,
            what="inst-1 to report itself the publisher",
        )
        assert not any((c.status(i) or {})["publishing"] for i in ("inst-2", "inst-3"))
        assert c.kill("inst-1") == -9  # SIGKILL the publisher under load
        others = ["inst-2", "inst-3", "inst-4"]
        base = c.max_final(others)
        c.wait_final(base + 5, others, timeout=60)  # finality goes on without it ...
        c.wait_until(  # ... and, after the takeover delay, so does publication
            lambda: blocks_max_height(c) >= base + 5,
            timeout=60,
            what="blocks published by the next in the publication order",
            alive=others,
        )
        c.wait_until(  # the status file is rewritten a moment after the blocks appear
            lambda: bool((c.status("inst-2") or {}).get("publishing")),
            timeout=30,
            what="inst-2 to report itself the publisher",
            alive=others,
        )
        assert not any((c.status(i) or {})["publishing"] for i in ("inst-3", "inst-4"))
        c.restart("inst-1")  # the first comes back, catches up and publishes again ...
        c.wait_ready(["inst-1"])
        c.wait_final(c.max_final(others) + 3, c.institutions, timeout=90)
        c.wait_until(  # ... and the second steps back
            lambda: not (c.status("inst-2") or {}).get("publishing"),
            timeout=60,
            what="inst-2 to step back",
        )
        back_at = c.max_final(c.institutions)
        c.wait_final(back_at + 3, c.institutions, timeout=60)
    finally:
        sent = load.stop()
    top = settle(c, sent, c.institutions)
    top, _replay = check_chain(c, min_copies=1)  # no gap at the takeover
    labels = publishers(c)
    took_over = [h for h, pubs in labels.items() if second in pubs]
    assert took_over, labels
    assert all(first in labels[h] for h in range(back_at + 2, top + 1)), labels
    check_votes(c, operators(c))


# -- 3. two crashes ---------------------------------------------------------------------------


def test_finality_stops_without_quorum_and_resumes_without_a_gap(
    make_consortium: MakeConsortium,
) -> None:
    c = make_consortium(n=4)
    c.start_all()
    c.wait_ready(c.institutions)
    alive, victims = ["inst-1", "inst-2"], ["inst-3", "inst-4"]
    load = start_load(c, "inst-2")
    try:
        c.wait_final(3, c.institutions, timeout=60)
        for victim in victims:
            c.kill(victim)
        stalled = assert_stalled(c, alive)
        by_height = c.blocks_by_height()
        assert all(len(set(raws)) == 1 for raws in by_height.values())
        for victim in victims:
            c.restart(victim)
        c.wait_final(stalled + 3, c.institutions, timeout=90)
    finally:
        sent = load.stop()
    settle(c, sent, c.institutions)
    check_chain(c, min_copies=1)
    check_votes(c, operators(c))


# -- 4. a Byzantine institution ---------------------------------------------------------------


class ByzantineVoter:
    """inst-4 gone bad: wrong hashes at every height, one equivocation, votes of an impostor.

    Watches the votes topic; at the first vote it sees for a height it votes for a wrong hash
    with inst-4's real operator key, and for that height an impostor (a key that is no
    operator) votes for the hash it saw. At the first height it sees, it also equivocates
    ahead of time at the next height: two different wrong hashes, before any honest vote.
    """

    def __init__(self, c: Consortium, inst: str) -> None:
        self.c = c
        self.key = c.operator_key(inst)
        self.impostor = new_key()
        self.equivocated_at: int | None = None
        self.voted: set[int] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="byzantine", daemon=True)

    def start(self) -> ByzantineVoter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def _send(self, producer: Producer, signer: KeyPair, height: int, block_hash: bytes) -> None:
        vote = sign_vote(signer, height=height, block_hash=block_hash)
        producer.produce(self.c.topic("votes"), key=str(height).encode(), value=vote.encode())

    def _run(self) -> None:
        consumer = Consumer(consumer_config(self.c.bootstrap, f"byz-{self.c.prefix}"))
        producer = Producer(producer_config(self.c.bootstrap, **{"linger.ms": 0}))
        try:
            consumer.assign([TopicPartition(self.c.topic("votes"), 0, OFFSET_BEGINNING)])
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=100, timeout=0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        vote = decode_vote(msg.value() or b"")
                    except DecodeError:
                        continue
                    if (
                        vote.operator_key_id in (self.key.key_id, self.impostor.key_id)
                        or vote.height in self.voted
                        or not vote.is_valid()
                    ):
                        continue
                    self.voted.add(vote.height)
                    self._send(producer, self.key, vote.height, sha256(b"wrong" + vote.block_hash))
                    self._send(producer, self.impostor, vote.height, vote.block_hash)
                    if self.equivocated_at is None:
                        ahead = vote.height + 1
                        self.equivocated_at = ahead
                        self.voted.add(ahead)
                        self._send(producer, self.key, ahead, sha256(b"first lie"))
                        self._send(producer, self.key, ahead, sha256(b"second lie"))
                    producer.flush(10)
        except BaseException as exc:
            self.error = exc
        finally:
            producer.flush(10)
            consumer.close()


def test_a_byzantine_institution_cannot_finalize_and_is_reported(
    make_consortium: MakeConsortium,
) -> None:
    c = make_consortium(n=4)
    honest = ["inst-1", "inst-2", "inst-3"]
    c.start_all(honest)
    c.wait_ready(honest)
    byzantine = ByzantineVoter(c, "inst-4").start()
    load = start_load(c, "inst-1")
    try:
        c.wait_final(4, honest, timeout=60)
        assert byzantine.equivocated_at is not None
        evidence = f"evidence/{byzantine.key.key_id.hex()}/{byzantine.equivocated_at}"
        c.wait_until(
            lambda: c.replay().state_get(evidence) is not None,
            timeout=60,
            what=f"{evidence} in the oracle's state",
            alive=honest,
        )
        c.wait_final(c.max_final(honest) + 3, honest, timeout=60)
        sent = load.stop()
        wait_included(c, Counter(tx_id(r) for r in sent))
        top = settled_height(c)
        c.wait_final(top, honest, timeout=60)
        c.wait_until(
            lambda: byzantine.voted >= set(range(1, top + 1)),
            timeout=20,
            what="the Byzantine double voting at every final height",
        )
    finally:
        load.stop()
        byzantine.stop()
    assert_healthy(c, honest)
    top, replay = check_chain(c, min_copies=1)
    honest_ops = operators(c, honest)
    check_votes(c, honest_ops)
    for _, raw, (header, _, _) in c.read_blocks():
        _, cert, _ = verify_finalized(raw, replay.validator_set(header.height))
        assert {v.operator_key_id for v in cert.votes} <= honest_ops
    record = replay.state_get(evidence)
    assert record is not None and record["institution_id"] == "inst-4"
    # The evidence came from honest operators' ReportEquivocation transactions.
    codes = {r.tx_id: r.code for b in replay.blocks for r in b.results}
    reports = []
    for msg in c.read_topic("tx"):
        try:
            tx = parse_tx(msg.value)
        except TxRejected:
            continue
        if tx.operation == "ReportEquivocation":
            reports.append((tx.sender, codes.get(tx.tx_id)))
    assert reports and {sender for sender, _ in reports} <= honest_ops
    assert ResultCode.OK in {code for _, code in reports}


# -- 5. admission of a fifth institution ------------------------------------------------------


def test_an_admitted_fifth_institution_validates_and_counts_for_quorum(
    make_consortium: MakeConsortium,
) -> None:
    c = make_consortium(n=4)
    c.start_all()
    c.wait_ready(c.institutions)
    gov5, op5 = new_key(), new_key()
    c.add_keystore("inst-5", gov5, [op5])
    propose = c.tx(
        c.gov_key("inst-1"),
        "ProposeMember",
        propose_member_args(gov5, [op5], chain_id=c.chain_id, institution_id="inst-5"),
    )
    ballot = {"proposal_id": tx_id(propose), "approve": True}
    votes = [c.tx(c.gov_key(i), "CastVote", ballot) for i in ("inst-2", "inst-3")]
    c.send([propose, *votes])
    wait_included(c, Counter(tx_id(r) for r in [propose, *votes]))
    entries = c.final_entries()
    assert all(entries[tx_id(r)][0][1] == ResultCode.OK for r in [propose, *votes])
    replay = c.replay()
    record = replay.state_get(inst_key("inst-5"))
    assert record is not None and record["status"] == "ACTIVE"
    admitted = int(record["effective_height"])
    assert replay.validator_set(admitted).size == 5

    founders = ["inst-1", "inst-2", "inst-3", "inst-4"]
    c.start("inst-5")
    c.wait_ready(["inst-5"])
    load = start_load(c, "inst-5", signer=gov5)
    try:
        c.wait_final(max(admitted, c.max_final(founders)) + 3, c.institutions, timeout=90)
        assert c.stop("inst-3") == 0
        assert c.stop("inst-4") == 0
        stalled = assert_stalled(c, ["inst-1", "inst-2", "inst-5"])
        c.restart("inst-3")
        running = ["inst-1", "inst-2", "inst-3", "inst-5"]
        c.wait_final(stalled + 3, running, timeout=90)
    finally:
        sent = load.stop()
    top = settle(c, sent, running)
    top, replay = check_chain(c, min_copies=1)
    check_votes(c, operators(c))
    assert replay.validator_set(top).quorum == 4
    # With inst-4 down, no block after the stall could be final without inst-5's vote.
    for _, raw, (header, _, _) in c.read_blocks():
        if header.height > stalled:
            _, cert, _ = verify_finalized(raw, replay.validator_set(header.height))
            assert op5.key_id in {v.operator_key_id for v in cert.votes}
    assert all(code == ResultCode.OK for got in c.final_entries().values() for _, code in got)


# -- configuration ------------------------------------------------------------------------------


def test_bad_configuration_exits_2(make_consortium: MakeConsortium) -> None:
    c = make_consortium(n=4)
    argv = c.argv("inst-1")
    argv[argv.index("--institution") + 1] = "inst-2"  # inst-1's keystore, another institution
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr.decode(errors="replace")[-2000:]
    argv = c.argv("inst-1", operator=7)  # no such operator in the keystore
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr.decode(errors="replace")[-2000:]
