"""A Byzantine institution (1 of 4) over the real broker, for what
``tests/integration/test_consensus.py`` does not cover yet: votes for unknown (far future)
heights, votes with forged signatures for far heights, floods of stale ``TimeToCut`` markers,
and oversized, malformed and wrong-schema messages on every ledger topic.

The three honest validators must keep finalizing, no wrong block may be final (every final
header equals the oracle's re-execution of the tx log, every copy that carries a valid
certificate is byte-identical), hostile tx-log entries are accounted for with a result code,
and no honest operator ever signs twice.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from harness.consortium import Consortium, HarnessError, Load, new_key
from ledger.blocks import decode_finalized
from ledger.cutter import TimeToCut
from ledger.errors import DecodeError, LedgerError
from ledger.finality import verify_finalized
from ledger.hashing import sha256
from ledger.results import ResultCode
from ledger.votes import sign_vote
from runtime.kafka_config import producer_config
from schemas.codec import encode
from tests.integration.test_consensus import check_votes, operators, tx_id

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HONEST = ["inst-1", "inst-2", "inst-3"]


@pytest.fixture
def consortium(bootstrap: str, unique: str, tmp_path: Path) -> Iterator[Consortium]:
    c = Consortium(
        bootstrap,
        tmp_path / "c",
        4,
        prefix=f"byz{unique}.",
        block_interval_ms=200,
        max_block_txs=50,
    )
    try:
        yield c
    finally:
        c.close()


def junk_messages(c: Consortium) -> list[bytes]:
    """Malformed, truncated, wrong-schema and oversized values."""
    vote = sign_vote(c.operator_key("inst-4"), height=1, block_hash=bytes(32)).encode()
    marker = TimeToCut(chain_id=c.chain_id, height=1, producer=bytes(32)).encode()
    return [
        b"",
        b"\x00",
        b"\xc3\x01",
        b"\xc3\x01" + os.urandom(8),
        b"\xc3\x01" + os.urandom(300),
        vote[:-5],
        vote + b"\x00",
        marker[:-1],
        vote,  # a vote where a tx or a block belongs, a marker where a vote belongs
        marker,
        encode("TimeToCut", {"chain_id": "other-chain", "height": 1, "producer": bytes(32)}),
        os.urandom(200_000),  # above max_tx_bytes, below the broker's limit
        b"\xc3\x01" + b"\xff" * 900_000,
    ]


def certified_copies(c: Consortium) -> tuple[dict[int, set[bytes]], int]:
    """Height -> distinct FinalizedBlock bytes that verify against the oracle; also the
    number of messages on the blocks topic that do not."""
    messages = c.read_topic("blocks")  # before the tx log: every final block is then cut
    replay = c.replay()
    out: dict[int, set[bytes]] = {}
    refused = 0
    for msg in messages:
        try:
            header, _, _ = verify_finalized(msg.value, replay.validator_set(_height(msg.key)))
        except (LedgerError, ValueError, IndexError, KeyError):
            refused += 1
            continue
        assert header == replay.block(header.height).header, f"wrong final block {header}"
        out.setdefault(header.height, set()).add(msg.value)
    return out, refused


def _height(key: bytes | None) -> int:
    try:
        return max(1, int(key or b"1"))
    except ValueError:
        return 1


def test_hostile_votes_markers_and_junk_on_every_topic_change_nothing(
    consortium: Consortium,
) -> None:
    c = consortium
    c.start_all(HONEST)
    c.wait_ready(HONEST)
    byz_op, impostor = c.operator_key("inst-4"), new_key()
    load = Load(c, c.gov_key("inst-1"), rate=25, tag="honest").start()
    producer = Producer(producer_config(c.bootstrap, **{"message.max.bytes": 2_000_000}))
    sent_junk: Counter[str] = Counter()
    try:
        c.wait_final(2, HONEST, timeout=60)
        for round_ in range(3):
            top = c.max_final(HONEST)
            # votes for heights nobody has cut, some far in the future, real and forged keys
            for height in (top + 50, top + 10_000, 2**40, 2**62):
                for signer in (byz_op, impostor):
                    vote = sign_vote(signer, height=height, block_hash=sha256(b"future%d" % height))
                    producer.produce(
                        c.topic("votes"), key=str(height).encode(), value=vote.encode()
                    )
                    sent_junk["future votes"] += 1
                forged = bytearray(sign_vote(byz_op, height=height, block_hash=bytes(32)).encode())
                forged[-1] ^= 1
                producer.produce(c.topic("votes"), key=str(height).encode(), value=bytes(forged))
                sent_junk["forged votes"] += 1
            # a flood of stale markers (heights already final) and markers of another chain
            for i in range(600):
                height = 1 + i % max(1, top)
                marker = TimeToCut(chain_id=c.chain_id, height=height, producer=byz_op.key_id)
                producer.produce(c.topic("tx"), key=b"byz", value=marker.encode())
                producer.poll(0)
            sent_junk["stale markers"] += 600
            # junk on every ledger topic
            for suffix in ("tx", "votes", "blocks", "receipts"):
                for raw in junk_messages(c):
                    key = b"byz" if suffix == "tx" else str(top + 1).encode()
                    producer.produce(c.topic(suffix), key=key, value=raw)
                    sent_junk[f"junk on {suffix}"] += 1
            assert producer.flush(60) == 0
            c.wait_final(top + 3, HONEST, timeout=60)
            assert c.max_final(HONEST) >= top + 3, f"round {round_}: no progress past {top}"
    finally:
        sent = load.stop()
        producer.flush(10)
    # every honest transaction final exactly once
    wanted = Counter(tx_id(r) for r in sent)

    def all_final() -> bool:
        copies, _ = certified_copies(c)
        replay = c.replay()
        final_ids = Counter(
            r.tx_id for h in copies for r in replay.block(h).results if r.code == ResultCode.OK
        )
        return all(final_ids[t] == 1 for t in wanted)

    c.wait_until(all_final, timeout=90, what="every honest tx final", alive=HONEST)
    copies, refused = certified_copies(c)
    top = max(copies)
    assert sorted(copies) == list(range(1, top + 1)), "gap in final heights"
    assert all(len(raws) == 1 for raws in copies.values()), "two certified versions of a height"
    assert refused == 3 * len(junk_messages(c)), refused  # exactly the junk is refused
    replay = c.replay()
    codes = Counter(r.code.name for b in replay.blocks for r in b.results)
    assert codes["MALFORMED"] > 0 and codes["TOO_LARGE"] + codes["MALFORMED"] >= 3 * 9, codes
    # every certified block is the one the replay computes, honest transactions included
    for height, raws in copies.items():
        (raw,) = raws
        assert decode_finalized(raw)[0].hash() == replay.block(height).block_hash, height
    for inst in HONEST:
        status = c.status(inst)
        assert status is not None and not status["diverged"], status
        assert status["final_height"] <= top
    c.check_alive(HONEST)
    assert check_votes(c, operators(c, HONEST)) >= top
    # the Byzantine operator's future votes certify nothing
    for raws in copies.values():
        (raw,) = raws
        _, cert, _ = verify_finalized(raw, replay.validator_set(_height_of(raw)))
        assert all(v.operator_key_id != impostor.key_id for v in cert.votes)
    print(
        f"byzantine: {dict(sent_junk)}; final height {top}; refused block msgs {refused}; "
        f"results {dict(codes)}"
    )
    if top < 5:
        raise HarnessError("the chain barely moved")


def _height_of(raw: bytes) -> int:
    try:
        return decode_finalized(raw)[0].height
    except DecodeError:
        return 0
