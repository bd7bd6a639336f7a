"""The validator's reads of votes, block copies and feeds, on two consumers (D64).

Every message appended to a partition a consumer reads ends that consumer's parked fetch
at the broker, and the consumer fetches again at once (``fetch.min.bytes`` 1): a following
standby (D52, D57), which reads the votes, the block copies and all four institutions' feeds,
was woken several times per block (about 50 fetches a second at 500 tx/s), each a request
the broker serves. A following standby needs none of it promptly: it applies blocks that
are final already, and takes over only after seconds.

So a standby has a second, *patient* consumer (:data:`PATIENT`: the broker answers once
1 MiB is there or after 500 ms, the idle long poll of every consumer): while the core
follows, the votes, blocks and feeds partitions are read by it; when the core turns eager
(its primary is silent) they move to the main consumer, at the next offset not yet handed
to the core, and back when it follows again. ``pantheon.tx`` stays on the main consumer
(``streams.validator_txlog``). A message still queued on the consumer a partition left is
dropped (:meth:`Reads.wanted`), as is one below the partition's position, so the core sees
each message once, in order per partition. The patient consumer is made when the core
first follows: a primary never has one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition

from runtime.kafka_config import consume_ready

log = logging.getLogger("pantheon.validator")

PATIENT = {"fetch.min.bytes": 1 << 20, "fetch.wait.max.ms": 500}
"""The patient consumer's fetch settings (a following standby's reads, D64)."""


class Reads:
    """Which consumer reads each of the validator's non-tx partitions, and where."""

    def __init__(self, main: Consumer, make_patient: Callable[[], Consumer]) -> None:
        self.main = main
        self._make_patient = make_patient
        self.patient: Consumer | None = None  # made when the core first follows
        self.positions: dict[str, int] = {}  # topic -> next offset to hand to the core
        self.following = False
        self.moves = 0  # times the partitions changed consumer

    def owner(self) -> Consumer:
        """The consumer that reads the non-tx partitions now."""
        return self.patient if self.following and self.patient is not None else self.main

    def assign(self, topic: str, offset: int) -> None:
        """Start reading partition 0 of ``topic`` at ``offset``."""
        self.positions[topic] = offset
        self.owner().incremental_assign([TopicPartition(topic, 0, offset)])

    def follow(self, following: bool) -> None:
        """The core follows (or not): move the partitions to the consumer for that."""
        if following == self.following:
            return
        if self.patient is None:
            self.patient = self._make_patient()
        source = self.owner()
        self.following = following
        if self.positions:
            source.incremental_unassign([TopicPartition(t, 0) for t in self.positions])
            self.owner().incremental_assign(
                [TopicPartition(t, 0, o) for t, o in self.positions.items()]
            )
        self.moves += 1
        log.info("moved the votes, blocks and feeds reads", extra={"patient": following})

    def consume(self, max_messages: int, timeout: float) -> list[tuple[Consumer, Message]]:
        """What the patient consumer has at once, then the main one's (waiting at most
        ``timeout`` for the first), each with the consumer it came from."""
        ready: list[tuple[Consumer, Message]] = []
        if self.patient is not None:
            ready = [(self.patient, m) for m in self.patient.consume(max_messages, timeout=0)]
        wait = 0.0 if ready else timeout
        return ready + [(self.main, m) for m in consume_ready(self.main, max_messages, wait)]

    def wanted(self, source: Consumer, msg: Message) -> bool:
        """Whether ``msg`` (of a partition placed here) is new and from its consumer now;
        if so, its partition's position moves past it."""
        topic, offset = msg.topic(), msg.offset()
        if topic not in self.positions or offset is None:
            return True  # the tx log, or an error: not placed here
        if source is not self.owner() or offset < self.positions[topic]:
            return False
        self.positions[topic] = offset + 1
        return True

    def close(self) -> None:
        """Close the patient consumer (the main one is the validator's)."""
        if self.patient is not None:
            self.patient.close()
