"""A forged ``pantheon-operator`` label on the blocks topic (D47, D54), real validators and
broker.

An attacker who can write the blocks topic answers every copy it reads with (1) a copy of
the next height labelled as the first publisher, signed by keys of its own, and (2) the
genuine bytes again, labelled as the last operator in the order. Validators release a held
block only on a copy with its bytes, so (1) releases nothing and (2) releases what was
published anyway; (1) makes an operator that took over step back, so after the first
publisher is killed publication goes on in bursts, one takeover delay apart. No reader
believes a forged copy: the SDK returns the certified outcome and counts the forgeries.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness.consortium import Consortium, Load
from ledger.blocks import EntryResult, decode_finalized, peek_height
from ledger.errors import LedgerError
from ledger.finality import verify_finalized
from ledger.keys import KeyPair
from ledger.results import ResultCode
from ledger.tx import parse_tx
from runtime.kafka_config import consumer_config, producer_config
from streams.sdk import LedgerClient
from streams.validator import PUBLISHER_HEADER
from tests.outcome_helpers import Attacker, certified, genesis_set

pytestmark = pytest.mark.integration
FORGED = "x-forged"  # marks the attacker's own copies so that it does not answer them


@dataclass
class LabelForger(Attacker):
    """Writes forged copies to the blocks topic in answer to every genuine copy."""

    consortium: Consortium
    first: bytes  # the first publisher's operator key id: the label forged on junk
    last: bytes  # the last operator's key id: the label forged on genuine bytes
    junk: Counter[int] = field(default_factory=Counter)
    relabelled: Counter[int] = field(default_factory=Counter)
    thread_name = "label forger"

    def _run(self) -> None:
        c = self.consortium
        topic = c.prefix + "blocks"
        consumer = Consumer(consumer_config(c.bootstrap, f"label-forger-{os.urandom(4).hex()}"))
        producer = Producer(producer_config(c.bootstrap, **{"linger.ms": 0}))
        evil = [KeyPair.from_seed(hashlib.sha256(b"label%d" % i).digest()) for i in range(3)]
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            self._ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(100, 0.05):
                    headers = dict(msg.headers() or [])
                    height = peek_height(msg.value() or b"")
                    if msg.error() is not None or FORGED in headers or height is None:
                        continue
                    self._answer(producer, topic, evil, height, msg.value() or b"")
        finally:
            producer.flush(10)
            consumer.close()

    def _answer(
        self, producer: Producer, topic: str, evil: list[KeyPair], height: int, raw: bytes
    ) -> None:
        lie = EntryResult(tx_id=os.urandom(32), offset=0, code=ResultCode.FORBIDDEN)
        junk = certified(height + 1, [lie], genesis_set(self.consortium.genesis, height + 1), evil)
        for value, label, at in ((junk, self.first, height + 1), (raw, self.last, height)):
            producer.produce(
                topic,
                key=str(at).encode(),
                value=value,
                headers=[(PUBLISHER_HEADER, label), (FORGED, b"1")],
            )
        producer.flush(10)
        self.junk[height + 1] += 1
        self.relabelled[height] += 1


@pytest.fixture
def consortium(bootstrap: str, tmp_path: Path) -> Iterator[Consortium]:
    c = Consortium(
        bootstrap, tmp_path / "c", 4, prefix=f"lbl{uuid.uuid4().hex[:8]}.", block_interval_ms=200
    )
    try:
        yield c
    finally:
        c.close()


def _certified(c: Consortium) -> dict[int, set[bytes]]:
    """Height -> the distinct copies on the blocks topic whose certificate verifies against
    the genesis set (the set never changes in this test), as every reader checks them."""
    out: dict[int, set[bytes]] = {}
    for height, copies in c.blocks_by_height().items():
        for raw in copies:
            try:
                verify_finalized(raw, genesis_set(c.genesis, height))
            except LedgerError:
                continue  # a forged copy: refused by its certificate
            out.setdefault(height, set()).add(raw)
    return out


def _top(c: Consortium) -> int:
    return max(_certified(c), default=0)


def test_a_forged_publisher_label_delays_publication_and_is_believed_by_nobody(
    consortium: Consortium,
) -> None:
    c = consortium
    c.start_all()
    c.wait_ready(c.institutions)
    first, last = c.operator_key("inst-1").key_id, c.operator_key("inst-4").key_id
    others = ["inst-2", "inst-3", "inst-4"]
    load = Load(c, c.gov_key("inst-3"), rate=20, tag="lbl").start()
    with LabelForger(c, first, last) as forger:
        try:
            c.wait_final(5, c.institutions, timeout=60)
            c.wait_until(lambda: _top(c) >= 5, timeout=60, what="published blocks")
            assert c.kill("inst-1") == -9  # the first publisher is gone
            # every takeover is undone by the next forged copy labelled inst-1, yet the
            # holders take over again after the delay: publication goes on, late
            base = c.max_final(others)
            c.wait_final(base + 10, others, timeout=90)
            c.wait_until(
                lambda: _top(c) >= base + 10,
                timeout=90,
                what="blocks published despite the forged labels",
                alive=others,
            )
            with LedgerClient(
                c.bootstrap, c.gov_key("inst-4"), c.chain_id, prefix=c.prefix, genesis=c.genesis
            ) as client:
                args = {
                    "data_id": f"lbl-{uuid.uuid4().hex[:8]}",
                    "sha256": bytes(32),
                    "metadata": "",
                }
                got = client.submit_and_wait("AnchorData", args, timeout=90)
                watcher = client.watcher
                assert watcher is not None
                c.wait_until(  # the junk copies that follow are read and refused
                    lambda: watcher.counts()["forged"] >= 1, timeout=30, what="a forged copy"
                )
                counts = watcher.counts()
        finally:
            sent = load.stop()
        assert got.code is ResultCode.OK, got
        assert counts["forged"] >= 1, counts  # the junk copies were read and refused
        c.wait_until(
            lambda: _top(c) >= c.max_final(others) and _included(c, sent),
            timeout=90,
            what="every final block published, every tx sent included",
        )
    replay = c.replay()
    assert got.block_hash == replay.block(got.height).block_hash
    certified_copies = _certified(c)
    top = max(certified_copies)
    assert sorted(certified_copies) == list(range(1, top + 1)), "a height was never published"
    for height, genuine in certified_copies.items():
        assert len(genuine) == 1, f"height {height}: {len(genuine)} distinct certified copies"
        header, _, _ = verify_finalized(next(iter(genuine)), replay.validator_set(height))
        assert header == replay.block(height).header, f"height {height} differs from the oracle"
    # the attacker answered every copy published while it ran; none of its junk verified
    assert set(range(1, base + 10)) <= set(forger.relabelled), forger.relabelled
    assert set(range(2, base + 11)) <= set(forger.junk), forger.junk
    final = _final_ids(c)
    assert all(final[parse_tx(raw).tx_id] == 1 for raw in sent), "a tx not final exactly once"


def _final_ids(c: Consortium) -> Counter[bytes]:
    """How many certified blocks hold each tx id."""
    found: Counter[bytes] = Counter()
    for copies in _certified(c).values():
        for raw in copies:  # one per height once checked; all of them while in doubt
            found.update(r.tx_id for r in decode_finalized(raw)[2])
    return found


def _included(c: Consortium, sent: list[bytes]) -> bool:
    final = _final_ids(c)
    return all(final[parse_tx(raw).tx_id] >= 1 for raw in sent)
