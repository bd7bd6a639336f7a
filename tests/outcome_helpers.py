"""Hand-made certified blocks for the outcome tests: a FinalizedBlock whose certificate is
signed by chosen operator keys, for any validator set (the genesis one, a changed one, or an
attacker's); and :class:`Forger`, the broker-writing attacker of issue 17."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Self

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from ledger.blocks import BlockHeader, EntryResult, encode_finalized, peek_height, receipt, tx_root
from ledger.finality import QuorumCertificate
from ledger.genesis import ConsortiumPlan, Genesis, genesis_state
from ledger.keys import KeyPair
from ledger.members import ValidatorSet, validator_set
from ledger.results import ResultCode
from ledger.tx import TxRejected, parse_tx
from ledger.votes import sign_vote
from runtime.kafka_config import consumer_config, producer_config


def genesis_set(plan: ConsortiumPlan | Genesis, height: int) -> ValidatorSet:
    """The genesis members restated for ``height``."""
    genesis = plan if isinstance(plan, Genesis) else plan.genesis
    return validator_set(genesis_state(genesis), height)


def operators(plan: ConsortiumPlan) -> list[KeyPair]:
    """The first operator key of each institution, in institution order."""
    return [plan.keys[inst][1][0] for inst in sorted(plan.keys)]


def results(*entries: tuple[bytes, int, ResultCode]) -> tuple[EntryResult, ...]:
    """Entry results from ``(tx_id, offset, code)``."""
    return tuple(EntryResult(tx_id=t, offset=o, code=c) for t, o, c in entries)


def header(height: int, entries: Sequence[EntryResult], validators: ValidatorSet) -> BlockHeader:
    """A header over ``entries`` naming ``validators``."""
    offsets = [r.offset for r in entries]
    return BlockHeader(
        height=height,
        prev_hash=hashlib.sha256(b"prev%d" % height).digest(),
        first_offset=min(offsets),
        last_offset=max(offsets),
        tx_root=tx_root(entries),
        state_root=hashlib.sha256(b"state%d" % height).digest(),
        validator_set_hash=validators.hash(),
        timestamp_ms=1_700_000_000_000 + height,
    )


def certified(
    height: int,
    entries: Sequence[EntryResult],
    validators: ValidatorSet,
    signers: Sequence[KeyPair],
    *,
    corrupt_signature: bool = False,
) -> bytes:
    """A FinalizedBlock of ``entries`` naming ``validators``, certified by ``signers``;
    ``corrupt_signature`` flips one bit of the first vote's signature."""
    head = header(height, entries, validators)
    votes = tuple(sign_vote(k, height=height, block_hash=head.hash()) for k in signers)
    cert = QuorumCertificate(height=height, block_hash=head.hash(), votes=votes)
    raw = encode_finalized(head, cert.record(), entries)
    if corrupt_signature:
        at = raw.find(votes[0].signature)
        raw = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]
    return raw


@dataclass
class Forged:
    """What the forger produced for one transaction."""

    tx_id: bytes
    tx_offset: int
    height: int  # of the forged block copy (the next height, as far as the forger knew)


class Attacker:
    """A background thread run by ``with``: :meth:`_run` sets ``_ready`` once it listens and
    returns when ``_stop`` is set."""

    thread_name = "attacker"

    def __enter__(self) -> Self:
        self._stop, self._ready = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), f"the {self.thread_name} did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class Forger(Attacker):
    """An attacker who can produce to the broker: for every transaction that appears on the tx
    topic it produces, at once, a forged ``Receipt`` (height 1,000,000, a random block hash,
    code FORBIDDEN), a forged ``FinalizedBlock`` copy of the next height that names the genesis
    validator set but is signed by the attacker's keys, and once an impostor vote (a member
    operator's id and public key, the attacker's signature) and a non-member vote."""

    bootstrap: str
    prefix: str
    genesis: Genesis
    impersonated: KeyPair  # a member's operator key pair (only its public half is used)
    forged: list[Forged] = field(default_factory=list)
    vote_height: int = 0
    thread_name = "forger"

    def _run(self) -> None:
        consumer = Consumer(consumer_config(self.bootstrap, f"forger-{os.urandom(4).hex()}"))
        producer = Producer(producer_config(self.bootstrap, **{"linger.ms": 0}))
        evil = [KeyPair.from_seed(hashlib.sha256(b"evil%d" % i).digest()) for i in range(3)]
        try:
            parts = []
            for suffix in ("tx", "blocks"):
                tp = TopicPartition(self.prefix + suffix, 0)
                _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
                start = high if suffix == "tx" else max(0, high - 1)  # the last block: its height
                parts.append(TopicPartition(self.prefix + suffix, 0, start))
            consumer.assign(parts)
            # Learn the last block's height before the test sends anything: a transaction
            # consumed before the last block would be forged at height 1, without the votes.
            early, last_height = self._last_height(consumer, parts[1].offset)
            self._ready.set()
            while not self._stop.is_set():
                for msg in early + consumer.consume(100, 0.05):
                    if msg.error() is not None:
                        continue
                    value = msg.value() or b""
                    if msg.topic() == self.prefix + "blocks":
                        last_height = max(last_height, peek_height(value) or 0)
                        continue
                    try:
                        tx_id = parse_tx(value).tx_id
                    except TxRejected:
                        continue  # a cut marker
                    offset = msg.offset() or 0
                    self._forge(producer, evil, tx_id, offset, last_height)
                early = []
        finally:
            producer.flush(10)
            consumer.close()

    def _last_height(self, consumer: Consumer, start: int) -> tuple[list[Message], int]:
        """Read the blocks topic from ``start`` to its end; return what else arrived and the
        highest height seen (0 on an empty topic)."""
        held: list[Message] = []
        last = 0
        if start == 0:
            return held, last
        deadline = time.monotonic() + 15
        while not last and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.05):
                if msg.error() is not None:
                    continue
                if msg.topic() == self.prefix + "blocks":
                    last = max(last, peek_height(msg.value() or b"") or 0)
                else:
                    held.append(msg)
        return held, last

    def _forge(
        self, producer: Producer, evil: list[KeyPair], tx_id: bytes, offset: int, last: int
    ) -> None:
        lie = EntryResult(tx_id=tx_id, offset=offset, code=ResultCode.FORBIDDEN)
        producer.produce(
            self.prefix + "receipts",
            key=tx_id,
            value=receipt(lie, height=1_000_000, block_hash=os.urandom(32)),
        )
        height = last + 1
        block = certified(height, [lie], genesis_set(self.genesis, height), evil)
        producer.produce(self.prefix + "blocks", key=str(height).encode(), value=block)
        if not self.vote_height and last:
            honest = sign_vote(self.impersonated, height=last, block_hash=os.urandom(32))
            bogus = sign_vote(evil[0], height=last, block_hash=honest.block_hash)
            impostor = replace(honest, signature=bogus.signature)
            producer.produce(self.prefix + "votes", value=impostor.encode())
            producer.produce(self.prefix + "votes", value=bogus.encode())
            self.vote_height = last
        producer.flush(10)
        self.forged.append(Forged(tx_id=tx_id, tx_offset=offset, height=height))
