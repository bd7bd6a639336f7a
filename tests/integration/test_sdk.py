"""The client SDK against the real broker: submit, nonces, verified outcomes (certified blocks,
never bare receipts), delivery failures."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.procs import free_port
from ledger.blocks import EntryResult, decode_finalized, receipt
from ledger.genesis import plan_consortium
from ledger.keys import KeyPair
from ledger.members import ValidatorSet
from ledger.results import ResultCode
from ledger.tx import parse_tx, sign_tx
from runtime.kafka_config import admin_config, consumer_config, producer_config
from runtime.topics import ensure_topics
from streams.sdk import (
    LedgerClient,
    OutcomeUnverifiable,
    Receipt,
    ReceiptTimeout,
    ReceiptWatcher,
    SdkError,
    SubmitError,
)
from tests.outcome_helpers import certified, genesis_set, operators, results

pytestmark = pytest.mark.integration

CHAIN = "sdk-test"
BLOCK = b"\xbb" * 32
PLAN = plan_consortium(
    CHAIN,
    [f"inst-{i}" for i in range(4)],
    [hashlib.sha256(b"sdk-seed-%d" % i).digest() for i in range(8)],
)


def _key(name: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(name.encode()).digest())


def _args(i: int) -> dict[str, object]:
    return {"data_id": f"d{i}", "sha256": hashlib.sha256(str(i).encode()).digest(), "metadata": ""}


@pytest.fixture
def prefix(bootstrap: str, unique: str) -> str:
    prefix = f"sdk{unique}."
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix)
    return prefix


def _read(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Message]:
    consumer = Consumer(consumer_config(bootstrap, f"sdk-test-{topic}"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(count - len(got), 0.2):
                assert msg.error() is None, msg.error()
                got.append(msg)
    finally:
        consumer.close()
    return got


def _publish(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = Producer(producer_config(bootstrap))
    for value in values:
        producer.produce(topic, value=value, key=b"k")
    assert producer.flush(10) == 0


def _receipt(tx_id: bytes, height: int, code: ResultCode = ResultCode.OK, offset: int = 0) -> bytes:
    result = EntryResult(tx_id=tx_id, offset=offset, code=code)
    return receipt(result, height=height, block_hash=BLOCK)


def test_submits_land_in_order_keyed_by_sender_with_consecutive_nonces(
    bootstrap: str, prefix: str
) -> None:
    key = _key("alice")
    with LedgerClient(
        bootstrap, key, CHAIN, prefix=prefix, next_nonce=3, watch_receipts=False
    ) as client:
        tx_ids = [client.submit("AnchorData", _args(i)) for i in range(6)]
        client.flush(10)
        assert client.next_nonce == 9
    assert len(set(tx_ids)) == 6
    messages = _read(bootstrap, f"{prefix}tx", 6)
    assert [m.key() for m in messages] == [key.key_id] * 6
    txs = [parse_tx(m.value() or b"") for m in messages]
    assert [tx.tx_id for tx in txs] == tx_ids
    assert [tx.nonce for tx in txs] == list(range(3, 9))
    assert {(tx.chain_id, tx.sender, tx.operation) for tx in txs} == {
        (CHAIN, key.key_id, "AnchorData")
    }


def test_concurrent_submits_get_unique_gap_free_nonces_in_log_order(
    bootstrap: str, prefix: str
) -> None:
    per_thread, threads = 25, 4
    returned: list[bytes] = []
    lock = threading.Lock()
    with LedgerClient(bootstrap, _key("bob"), CHAIN, prefix=prefix, watch_receipts=False) as client:

        def work(t: int) -> None:
            for i in range(per_thread):
                tx_id = client.submit("AnchorData", _args(t * 1000 + i))
                with lock:
                    returned.append(tx_id)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        client.flush(10)
    total = per_thread * threads
    txs = [parse_tx(m.value() or b"") for m in _read(bootstrap, f"{prefix}tx", total)]
    assert [tx.nonce for tx in txs] == list(range(total))  # the log holds them in nonce order
    assert sorted(tx.tx_id for tx in txs) == sorted(returned)
    assert len(set(returned)) == total


def _block(height: int, *entries: tuple[bytes, int, ResultCode], forged: str = "") -> bytes:
    """A FinalizedBlock certified by three of PLAN's four operators; ``forged``: "signature"
    (one vote's signature broken) or "set" (the attacker's own validator set and keys)."""
    rows = results(*entries)
    if forged == "set":
        evil = [_key(f"evil{i}") for i in range(4)]
        fake = ValidatorSet(
            height=height,
            members={f"inst-{i}": {k.key_id: k.public_key} for i, k in enumerate(evil)},
        )
        return certified(height, rows, fake, evil[:3])
    return certified(
        height,
        rows,
        genesis_set(PLAN, height),
        operators(PLAN)[:3],
        corrupt_signature=forged == "signature",
    )


def test_watcher_takes_outcomes_only_from_verified_blocks(bootstrap: str, prefix: str) -> None:
    blocks = f"{prefix}blocks"
    early, before, after, later, orphan = (bytes([n]) * 32 for n in (1, 2, 3, 4, 5))
    _publish(bootstrap, blocks, _block(1, (early, 0, ResultCode.OK)))  # not seen by default
    with ReceiptWatcher(
        bootstrap, genesis=PLAN.genesis, prefix=prefix, check_receipts=True
    ) as watcher:
        assert watcher.start_offset == 1
        true_block = _block(2, (before, 5, ResultCode.BAD_NONCE), (orphan, 6, ResultCode.OK))
        _publish(
            bootstrap,
            blocks,
            _block(2, (before, 5, ResultCode.OK), forged="signature"),  # bad certificate
            b"not a block",
            _receipt(before, 2),  # a receipt is not a block
            _block(9, (orphan, 6, ResultCode.FORBIDDEN), forged="set"),  # unknown set
            true_block,
            true_block,  # another validator's identical copy
        )
        _publish(bootstrap, f"{prefix}receipts", _receipt(before, 1_000_000, ResultCode.FORBIDDEN))
        got = watcher.wait(before, 10)
        assert got == Receipt(
            tx_id=before,
            height=2,
            offset=5,
            code=ResultCode.BAD_NONCE,
            block_hash=decode_finalized(true_block)[0].hash(),
        )
        assert not got.accepted
        assert watcher.wait(orphan, 10).code is ResultCode.OK  # not FORBIDDEN (unverifiable)

        timer = threading.Timer(
            0.3, _publish, (bootstrap, blocks, _block(3, (after, 7, ResultCode.OK)))
        )
        timer.start()
        try:
            assert watcher.wait(after, 10).accepted
        finally:
            timer.join()
        assert watcher.get(early) is None
        deadline = time.monotonic() + 10
        while watcher.counts()["forged_receipts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.counts() == {
            "verified_height": 3,
            "duplicates": 1,
            "malformed": 2,
            "forged": 1,
            "unverifiable": 1,
            "conflicting": 0,
            "receipts_checked": 1,
            "forged_receipts": 1,
        }

        started = time.monotonic()
        with pytest.raises(ReceiptTimeout) as info:
            watcher.wait(later, 0.3)
        assert info.value.tx_id == later
        assert 0.25 < time.monotonic() - started < 5

        # a tx seen only in a block of a set the client cannot establish: a typed error
        _publish(bootstrap, blocks, _block(12, (later, 9, ResultCode.FORBIDDEN), forged="set"))
        with pytest.raises(OutcomeUnverifiable, match="cannot be established"):
            watcher.wait(later, 1.0)
    assert not watcher.alive

    with ReceiptWatcher(
        bootstrap, genesis=PLAN.genesis, prefix=prefix, from_beginning=True
    ) as replay:
        assert replay.wait(early, 10).height == 1
        assert replay.wait(before, 10).height == 2


def test_watcher_memory_is_bounded_oldest_first(bootstrap: str, prefix: str) -> None:
    ids = [bytes([n]) * 32 for n in range(1, 6)]
    _publish(
        bootstrap,
        f"{prefix}blocks",
        *(_block(h + 1, (t, h, ResultCode.OK)) for h, t in enumerate(ids)),
    )
    with ReceiptWatcher(
        bootstrap, genesis=PLAN.genesis, prefix=prefix, from_beginning=True, max_entries=3
    ) as watcher:
        assert watcher.wait(ids[-1], 10).height == 5
        assert [watcher.get(t) is not None for t in ids] == [False, False, True, True, True]


def test_submit_and_wait_returns_the_certified_outcome_not_a_forged_receipt(
    bootstrap: str, prefix: str
) -> None:
    key = _key("carol")
    with pytest.raises(SdkError, match="genesis"):
        LedgerClient(bootstrap, key, CHAIN, prefix=prefix).submit_and_wait("AnchorData", _args(0))
    with LedgerClient(bootstrap, key, CHAIN, prefix=prefix, genesis=PLAN.genesis) as client:
        tx_id = client.submit("AnchorData", _args(1))
        client.flush(10)
        (msg,) = _read(bootstrap, f"{prefix}tx", 1)
        offset = msg.offset() or 0
        # the attack of issue 17: a forged receipt right after the submit, before the block
        _publish(
            bootstrap,
            f"{prefix}receipts",
            _receipt(tx_id, 1_000_000, ResultCode.FORBIDDEN, offset=offset),
        )
        _publish(bootstrap, f"{prefix}blocks", _block(7, (tx_id, offset, ResultCode.OK)))
        got = client.wait_receipt(tx_id, 10)
        assert (got.height, got.offset, got.accepted) == (7, offset, True)

        # The next tx id is known in advance: it depends only on the body (nonce 1).
        next_id = parse_tx(
            sign_tx(key, chain_id=CHAIN, nonce=1, operation="AnchorData", args=_args(2))
        ).tx_id
        timer = threading.Timer(
            0.5, _publish, (bootstrap, f"{prefix}blocks", _block(8, (next_id, 1, ResultCode.OK)))
        )
        _publish(
            bootstrap,
            f"{prefix}blocks",
            _block(8, (next_id, 1, ResultCode.FORBIDDEN), forged="signature"),
        )
        timer.start()
        try:
            assert client.submit_and_wait("AnchorData", _args(2), timeout=15).height == 8
        finally:
            timer.join()
        watcher = client.watcher
        assert watcher is not None and watcher.forged == 1


def test_flush_to_an_unreachable_broker_raises_submit_error(unique: str) -> None:
    key = _key(f"dave{unique}")
    client = LedgerClient(
        f"127.0.0.1:{free_port()}",
        key,
        CHAIN,
        watch_receipts=False,
        producer_overrides={"message.timeout.ms": 1000},
    )
    tx_id = client.submit("AnchorData", _args(1))
    started = time.monotonic()
    with pytest.raises(SubmitError) as info:
        client.flush(15)
    assert time.monotonic() - started < 10
    assert [(f.tx_id, f.nonce) for f in info.value.failures] == [(tx_id, 0)]
    client.close(1)  # already reported: nothing left to raise


def test_close_purges_and_reports_what_it_could_not_deliver(unique: str) -> None:
    client = LedgerClient(
        f"127.0.0.1:{free_port()}", _key(f"erin{unique}"), CHAIN, watch_receipts=False
    )
    tx_id = client.submit("AnchorData", _args(1))
    started = time.monotonic()
    with pytest.raises(SubmitError) as info:
        client.close(0.5)
    assert time.monotonic() - started < 5
    assert [f.tx_id for f in info.value.failures] == [tx_id]
    client.close()  # idempotent
