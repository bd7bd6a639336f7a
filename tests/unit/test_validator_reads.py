"""Where a validator reads votes, blocks and feeds: the patient consumer of a following
standby and the moves between it and the main one (``streams.validator_reads``, D64).

The consumers here are stand-ins that record assignments and hand out queued messages; the
real consumers' behaviour is covered by ``tests/integration/test_operators.py``.
"""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import Consumer, Message, TopicPartition

from streams.validator_reads import Reads


class Msg:
    def __init__(self, topic: str, offset: int) -> None:
        self._topic, self._offset = topic, offset

    def topic(self) -> str:
        return self._topic

    def offset(self) -> int:
        return self._offset


class StandIn:
    """Records what is assigned and hands out what a test queues."""

    def __init__(self) -> None:
        self.assigned: dict[str, int] = {}
        self.queue: list[Msg] = []
        self.closed = False

    def incremental_assign(self, parts: list[TopicPartition]) -> None:
        self.assigned.update({p.topic: p.offset for p in parts})

    def incremental_unassign(self, parts: list[TopicPartition]) -> None:
        for p in parts:
            del self.assigned[p.topic]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Msg]:
        out, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return out

    def close(self) -> None:
        self.closed = True


def setup() -> tuple[Reads, StandIn, list[StandIn]]:
    main = StandIn()
    made: list[StandIn] = []

    def make() -> Consumer:
        made.append(StandIn())
        return cast(Consumer, made[-1])

    return Reads(cast(Consumer, main), make), main, made


def handed(reads: Reads, batch: list[tuple[Consumer, Message]]) -> list[tuple[str, int]]:
    return [(m.topic() or "", m.offset() or 0) for c, m in batch if reads.wanted(c, m)]


def as_msgs(*items: tuple[str, int]) -> list[Msg]:
    return [Msg(t, o) for t, o in items]


def test_a_primary_reads_everything_on_its_main_consumer() -> None:
    reads, main, made = setup()
    reads.assign("votes", 7)
    reads.follow(False)
    assert main.assigned == {"votes": 7} and made == []  # no patient consumer, ever
    main.queue = as_msgs(("votes", 7), ("tx", 100), ("votes", 8))
    assert handed(reads, reads.consume(1000, 0)) == [("votes", 7), ("tx", 100), ("votes", 8)]


def test_following_moves_the_partitions_at_their_positions_and_back() -> None:
    reads, main, made = setup()
    reads.assign("votes", 3)
    main.queue = as_msgs(("votes", 3), ("votes", 4))
    assert handed(reads, reads.consume(1000, 0)) == [("votes", 3), ("votes", 4)]
    reads.follow(True)
    (patient,) = made
    assert main.assigned == {} and patient.assigned == {"votes": 5}
    reads.assign("feeds", 40)  # watched while following: on the patient consumer
    assert patient.assigned == {"votes": 5, "feeds": 40}
    patient.queue = as_msgs(("votes", 5), ("feeds", 40), ("feeds", 41))
    assert handed(reads, reads.consume(1000, 0)) == [("votes", 5), ("feeds", 40), ("feeds", 41)]
    reads.follow(False)  # eager: everything back on the main consumer, where it stood
    assert patient.assigned == {} and main.assigned == {"votes": 6, "feeds": 42}
    reads.follow(True)
    assert made == [patient]  # made once
    assert reads.moves == 3


def test_what_the_old_consumer_still_held_is_dropped_and_read_again_in_order() -> None:
    reads, main, made = setup()
    reads.assign("votes", 0)
    reads.follow(True)
    (patient,) = made
    patient.queue = as_msgs(("votes", 0), ("votes", 1), ("votes", 2))
    got = handed(reads, [(cast(Consumer, patient), cast(Message, m)) for m in patient.queue[:1]])
    assert got == [("votes", 0)]
    reads.follow(False)  # votes 1 and 2 were fetched by the patient consumer, not handed over
    late = [(cast(Consumer, patient), cast(Message, m)) for m in patient.queue[1:]]
    assert handed(reads, late) == []  # from the consumer the partition left: dropped
    assert main.assigned == {"votes": 1}
    main.queue = as_msgs(("votes", 0), ("votes", 1), ("votes", 2))  # 0: a duplicate
    assert handed(reads, reads.consume(1000, 0)) == [("votes", 1), ("votes", 2)]


def test_closing_closes_the_patient_consumer_only() -> None:
    reads, main, made = setup()
    reads.close()  # none made: nothing to close
    reads.follow(True)
    reads.close()
    assert made[0].closed and not main.closed


def test_errors_and_unplaced_topics_are_handed_on() -> None:
    reads, main, _ = setup()
    error: Any = Msg("votes", 0)
    error.offset = lambda: None
    assert reads.wanted(cast(Consumer, main), cast(Message, error))
    assert reads.wanted(cast(Consumer, main), cast(Message, Msg("tx", 5)))
