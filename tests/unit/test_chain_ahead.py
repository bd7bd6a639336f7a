"""The chain projection executes the next block before its certificate, and uses that work
only when the certificate vouches for every signature in the block (D20)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from confluent_kafka import Message

from ledger.blocks import encode_finalized
from ledger.cutter import TimeToCut
from ledger.execution import LedgerMachine
from ledger.finality import QuorumCertificate
from ledger.genesis import plan_consortium
from ledger.results import ResultCode
from ledger.tx import sign_tx
from ledger.votes import sign_vote
from projections.chain import ChainProjection
from projections.chain_rows import entry_rows
from projections.rows import BatchRows

IDS = ["org-a", "org-b", "org-c", "org-d"]
ARGS = {"sha256": bytes(32), "metadata": "m"}


@dataclass
class _Msg:
    """The part of a Kafka message the projection reads."""

    _topic: str
    _offset: int
    _value: bytes

    def topic(self) -> str:
        return self._topic

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (2, 1000 + self._offset)


def _messages(topic: str, raws: Sequence[bytes]) -> list[Message]:
    return [cast(Message, _Msg(topic, offset, raw)) for offset, raw in enumerate(raws)]


PLAN = plan_consortium(
    "c", IDS, [hashlib.sha256(f"{i}/{r}".encode()).digest() for i in IDS for r in ("g", "o")]
)


def _setup(forge: bool) -> tuple[ChainProjection, LedgerMachine, list[bytes]]:
    plan = PLAN
    key = plan.keys["org-a"][0]
    raws = [
        sign_tx(
            key, chain_id="c", nonce=n, operation="AnchorData", args={**ARGS, "data_id": f"d-{n}"}
        )
        for n in range(3)
    ]
    if forge:
        last = bytearray(raws[-1])
        last[-1] ^= 1
        raws[-1] = bytes(last)
    marker = TimeToCut(chain_id="c", height=1, producer=b"").encode()
    projection = ChainProjection(plan.genesis)
    return projection, LedgerMachine(plan.genesis), [*raws, marker]


def test_a_block_executed_ahead_is_used_when_every_signature_is_certified() -> None:
    projection, honest_machine, raws = _setup(forge=False)
    projection.read_ahead(_messages(projection.topic_tx, raws))
    cut = projection._cuts[1]
    honest = honest_machine.execute(cut)
    executed, rows = projection._execute(cut, honest.results)
    assert projection.counters["blocks_executed_ahead"] == 1
    assert executed.header == honest.header and executed.results == honest.results
    expected = BatchRows()  # the entry rows built ahead are the ones built after
    entry_rows(expected, honest, cut, projection.machine.state.get)
    assert rows is not None and rows == expected and rows.append["transactions"]
    # the work ahead is used once: a second certificate for the same cut executes again
    again, rows = projection._execute(cut, honest.results)
    assert again.header == honest.header and rows is None
    assert projection.counters["blocks_executed_ahead"] == 1


def test_a_block_with_a_bad_signature_is_executed_again() -> None:
    """Ahead of its certificate the forged entry was taken as signed (so its result is OK
    there); the certificate does not vouch for it, so the block runs again and the forged
    entry gets BAD_SIGNATURE, as every validator computed."""
    projection, honest_machine, raws = _setup(forge=True)
    projection.read_ahead(_messages(projection.topic_tx, raws))
    cut = projection._cuts[1]
    assert projection._ahead is not None
    assert projection._ahead.executed.results[-1].code is ResultCode.OK
    honest = honest_machine.execute(cut)
    assert honest.results[-1].code is ResultCode.BAD_SIGNATURE
    executed, rows = projection._execute(cut, honest.results)
    assert projection.counters["blocks_executed_ahead"] == 0 and rows is None
    assert executed.block_hash == honest.block_hash
    assert executed.results[-1].code is ResultCode.BAD_SIGNATURE


def test_the_marker_that_completes_a_held_copy_is_due_at_once() -> None:
    """A block's copy may come before the marker that cuts it: the copy waits, and the
    transactions that complete the cut must then be committed at once, not held."""
    projection, honest_machine, raws = _setup(forge=False)
    oracle = ChainProjection(PLAN.genesis)
    oracle.read_ahead(_messages(oracle.topic_tx, raws))
    executed = honest_machine.execute(oracle._cuts[1])
    voters = [ops[0] for _, ops in (PLAN.keys[i] for i in IDS)][: executed.validator_set.quorum]
    votes = tuple(sign_vote(k, height=1, block_hash=executed.block_hash) for k in voters)
    cert = QuorumCertificate(height=1, block_hash=executed.block_hash, votes=votes)
    copy = encode_finalized(executed.header, cert.record(), executed.results)

    tx = _messages(projection.topic_tx, raws)
    projection.read_ahead(tx[:2])
    assert not projection.commit_due(tx[:2])  # transactions alone
    projection._add_copy(0, copy)  # the copy came first: held, its block not cut yet
    projection.read_ahead(tx[2:3])
    assert not projection.commit_due(tx[2:3])
    projection.read_ahead(tx[3:])  # the marker: block 1 is cut and its copy is there
    assert projection.commit_due(tx[3:])
