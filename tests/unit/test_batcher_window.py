"""One partition's window of device messages (:mod:`readers.batcher.window`): pure."""

from __future__ import annotations

from ledger.devices import sign_device_record
from ledger.l2 import RECORD_KIND, Parsed, Reason, batch_id, parse_l2
from ledger.merkle import root
from readers.batcher.window import Window
from tests.unit.chain_helpers import key

DEVICE = key("device-window")
TOPIC = "pantheon.l2.records"


def _parsed(sequence: int) -> Parsed:
    record = sign_device_record(
        DEVICE, sequence=sequence, measured_at_ms=sequence, content_type="", payload=b"x"
    )
    return parse_l2(record.encode())


def test_an_empty_window_seals_no_batch() -> None:
    window = Window(partition=2, start=10, next=10)
    window.take(10, 5_000, now=1.0)
    window.reject(10, Reason.MALFORMED, b"", -1, b"junk")
    assert window.messages == 1 and window.next == 11 and window.opened == 1.0
    assert window.batch("alpha", TOPIC) is None
    assert [r.reason for r in window.rejected] == [Reason.MALFORMED.value]


def test_accepted_messages_make_the_batch() -> None:
    window = Window(partition=1, start=7, next=7)
    parsed = [_parsed(3), _parsed(4)]
    for offset, (p, ts) in enumerate(zip(parsed, (900, 400), strict=True), start=7):
        window.take(offset, ts, now=float(offset))
        window.accept(p)
    assert window.opened == 7.0  # the first message opened it
    assert window.sequences == {DEVICE.key_id: 4}
    assert [leaf.kind for leaf in window.leaves] == [0, 0] and parsed[0].kind == RECORD_KIND
    batch = window.batch("alpha", TOPIC)
    assert batch is not None
    assert batch.batch_id == batch_id("alpha", TOPIC, 1, 7, 8)
    assert (batch.first_offset, batch.last_offset, batch.leaf_count) == (7, 8, 2)
    assert batch.record_count == 2
    assert batch.merkle_root == root([p.leaf for p in parsed])
    assert (batch.window_start_ms, batch.window_end_ms) == (400, 900)
    following = window.following()
    assert (following.partition, following.start, following.next) == (1, 9, 9)
    assert following.messages == 0 and not following.leaves
