"""Where a transaction's finality latency goes, from the logs a consensus run left behind.

Every ledger topic uses broker append times (``LogAppendTime``), all on this host's clock,
so after a run the stages of each transaction can be read back without touching the
validators:

* ``append``: the bench's produce call -> the transaction appended to ``pantheon.tx``
  (producer batching, the broker);
* ``cut``: appended -> the message that closed its block appended (the block's header
  timestamp: the size limit or a ``TimeToCut`` marker; the marker interval under low load);
* ``first vote``: cut -> the first vote for that height appended (reading the block,
  executing it, journaling the vote, producing it);
* ``quorum vote``: first vote -> the vote that completed the quorum appended (the slowest
  validators of the quorum);
* ``final``: quorum vote -> the first copy of the final block appended (reading the votes,
  publishing);
* ``receipt``: final block appended -> the bench's reader saw the first receipt.

    stages(bootstrap, prefix, owners=..., sent=..., seen=..., ids=...) -> {stage: [seconds per tx]}
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from ledger.blocks import decode_finalized
from ledger.errors import DecodeError
from ledger.members import quorum
from ledger.votes import decode_vote
from runtime.kafka_config import consumer_config

STAGES = ("append", "cut", "first vote", "quorum vote", "final", "receipt")


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every message of partition 0 of ``topic`` up to its current end."""
    consumer = Consumer(consumer_config(bootstrap, "bench-stages"))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[Message] = []
        while (not out or (out[-1].offset() or 0) < high - 1) and high > 0:
            batch = consumer.consume(10000, timeout)
            if not batch:
                break
            out += [m for m in batch if m.error() is None]
        return out
    finally:
        consumer.close()


def institutions_of(net: Path, names: list[str]) -> dict[bytes, str]:
    """Operator key id -> institution, from the bench's key files."""
    owner: dict[bytes, str] = {}
    for name in names:
        doc = json.loads((net / "keys" / f"{name}.json").read_text())
        for op in doc["operators"]:
            owner[bytes.fromhex(op["key_id"])] = name
    return owner


def stages(
    bootstrap: str,
    prefix: str,
    *,
    owners: dict[bytes, str],
    sent: dict[bytes, float],
    seen: dict[bytes, float],
    ids: list[bytes],
) -> dict[str, list[float]]:
    """Seconds spent in each stage (:data:`STAGES`) by every transaction of ``ids`` that was
    sent and finalized (``sent``/``seen``: wall-clock seconds per tx id)."""
    appended = {m.offset(): m.timestamp()[1] / 1000 for m in read_topic(bootstrap, prefix + "tx")}
    need = quorum(len(set(owners.values())))
    first_vote: dict[int, float] = {}
    quorum_vote: dict[int, float] = {}
    voters: dict[int, set[str]] = defaultdict(set)
    for msg in read_topic(bootstrap, prefix + "votes"):
        try:
            vote = decode_vote(msg.value() or b"")
        except DecodeError:
            continue
        at = msg.timestamp()[1] / 1000
        first_vote.setdefault(vote.height, at)
        voters[vote.height].add(owners.get(vote.operator_key_id, "?"))
        if len(voters[vote.height]) >= need:
            quorum_vote.setdefault(vote.height, at)
    where: dict[bytes, tuple[int, int, float, float]] = {}  # tx id -> offset, height, cut, final
    for msg in read_topic(bootstrap, prefix + "blocks"):
        try:
            header, _, results = decode_finalized(msg.value() or b"")
        except DecodeError:
            continue
        final = msg.timestamp()[1] / 1000
        for r in results:
            if r.tx_id not in where:
                where[r.tx_id] = (r.offset, header.height, header.timestamp_ms / 1000, final)
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for tx_id in ids:
        if tx_id not in sent or tx_id not in seen or tx_id not in where:
            continue
        offset, height, cut, final = where[tx_id]
        if offset not in appended or height not in quorum_vote:
            continue
        marks = [
            sent[tx_id],
            appended[offset],
            cut,
            first_vote[height],
            quorum_vote[height],
            final,
            seen[tx_id],
        ]
        for name, a, b in zip(STAGES, marks, marks[1:], strict=False):
            out[name].append(b - a)
    return out
