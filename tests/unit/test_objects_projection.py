"""The objects projection follows the IAM projection's verdicts (D21, D23) exactly: only the
message the IAM projection accepted at an offset of partition 0 is applied.

A recording cursor stands in for PostgreSQL: these are the projection's decisions, not SQL."""

from __future__ import annotations

from typing import Any

from ledger.iam_events import sign_event
from ledger.keys import KeyPair
from projections.objects import ObjectsProjection
from schemas.codec import encode

INST = "inst-1"
EVENT_ID = "e" * 32


class Msg:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class Cur:
    """``decided``: the IAM projection's position; ``accepted``: its ``iam_events``."""

    def __init__(self, decided: int, accepted: dict[int, str]) -> None:
        self.decided, self.accepted = decided, accepted
        self.writes: list[Any] = []
        self._last = ""

    def execute(self, query: str, params: Any = None) -> Cur:
        self._last = query
        if "objects.objects" in query or "objects.grants" in query:
            self.writes.append(params)
        return self

    def fetchone(self) -> tuple[int]:
        return (self.decided,)

    def fetchall(self) -> list[tuple[int, str]]:
        return list(self.accepted.items())


def stored(event_id: str) -> bytes:
    record = {
        "event_id": event_id,
        "institution_id": INST,
        "at_ms": 0,
        "object_id": "victim",
        "owner": "u-victim",
        "sha256": bytes(32),
        "size": 1,
        "content_type": "text/plain",
        "metadata": "",
        "data_key_id": "k",
        "upload_id": "up-forged",
        "chunk_count": 1,
        "chunk_root": bytes(32),
        "anchor_tx": bytes(32),
        "anchor_height": 1,
        "mac": bytes(32),
        "actor": "mallory",
    }
    attacker = KeyPair.from_seed(bytes(range(32)))  # signature checks are the IAM side's
    return sign_event(attacker, INST, 0, encode("ObjectStored", record))


def apply(cur: Cur, *msgs: Msg) -> int | None:
    return ObjectsProjection(INST).apply(cur, list(msgs))  # type: ignore[arg-type]


def test_the_accepted_message_is_applied() -> None:
    cur = Cur(decided=10, accepted={5: EVENT_ID})
    assert apply(cur, Msg(0, 5, stored(EVENT_ID))) is None
    assert cur.writes


def test_a_message_on_another_partition_at_an_accepted_offset_is_ignored() -> None:
    cur = Cur(decided=10, accepted={5: EVENT_ID})
    assert apply(cur, Msg(1, 5, stored(EVENT_ID))) is None
    assert cur.writes == []


def test_a_message_whose_event_id_was_not_the_accepted_one_is_ignored() -> None:
    cur = Cur(decided=10, accepted={5: EVENT_ID})
    assert apply(cur, Msg(0, 5, stored("f" * 32))) is None
    assert cur.writes == []


def test_a_refused_offset_is_ignored_and_an_undecided_one_waits() -> None:
    cur = Cur(decided=6, accepted={})
    assert apply(cur, Msg(0, 5, stored(EVENT_ID)), Msg(0, 6, stored(EVENT_ID))) == 1
    assert cur.writes == []
