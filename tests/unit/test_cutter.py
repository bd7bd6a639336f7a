"""Block cutting: limits, markers, offsets, determinism."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.cutter import CutBlock, Cutter, TimeToCut, as_marker, time_to_cut_due
from ledger.errors import StateError


def marker(height: int, chain: str = "c") -> bytes:
    return TimeToCut(chain_id=chain, height=height, producer=b"p").encode()


def cutter(**kw: int) -> Cutter:
    return Cutter(
        chain_id="c",
        next_height=1,
        max_block_txs=kw.get("txs", 3),
        max_block_bytes=kw.get("bytes", 1000),
    )


def test_cut_by_count() -> None:
    c = cutter(txs=2)
    assert c.feed(0, 10, b"a") is None
    block = c.feed(1, 11, b"b")
    assert block is not None and block.height == 1 and len(block.entries) == 2
    assert (block.first_offset, block.last_offset, block.timestamp_ms) == (0, 1, 11)
    assert c.pending_height == 2


def test_cut_by_bytes() -> None:
    c = cutter(bytes=5)
    assert c.feed(0, 0, b"abc") is None
    block = c.feed(1, 0, b"de")
    assert block is not None and len(block.entries) == 2


def test_first_marker_wins_and_stale_ones_are_ignored() -> None:
    c = cutter()
    assert c.feed(0, 0, marker(1)) is None  # nothing pending: ignored
    assert c.feed(1, 5, b"tx") is None
    assert c.feed(2, 6, marker(2)) is None  # early
    assert c.feed(3, 7, marker(1, chain="other")) is None
    block = c.feed(4, 8, marker(1))
    assert block is not None
    assert (block.first_offset, block.last_offset, block.timestamp_ms) == (0, 4, 8)
    assert [e.offset for e in block.entries] == [1]
    assert c.feed(5, 9, marker(1)) is None  # stale
    assert c.feed(6, 9, b"tx2") is None
    second = c.feed(7, 9, marker(2))
    assert second is not None and second.first_offset == 5


def test_no_empty_blocks_and_monotonic_offsets() -> None:
    c = cutter()
    assert c.feed(0, 0, marker(1)) is None
    with pytest.raises(StateError):
        c.feed(0, 0, b"x")


def test_time_to_cut_due() -> None:
    assert not time_to_cut_due(100, None, 10)
    assert not time_to_cut_due(105, 100, 10)
    assert time_to_cut_due(110, 100, 10)


def test_garbage_is_an_entry_not_a_marker() -> None:
    assert as_marker(b"\xc3\x01garbage") is None
    assert as_marker(marker(3)) == TimeToCut(chain_id="c", height=3, producer=b"p")


message = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.integers(min_value=1, max_value=8).map(marker),
)


def run(messages: list[tuple[int, bytes]], txs: int, size: int) -> list[CutBlock]:
    c = Cutter(chain_id="c", next_height=1, max_block_txs=txs, max_block_bytes=size)
    out = []
    offset = 0
    for gap, raw in messages:
        offset += gap
        block = c.feed(offset, offset * 10, raw)
        if block is not None:
            out.append(block)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(min_value=1, max_value=3), message), max_size=60),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=200),
)
def test_two_independent_cutters_cut_identical_blocks(
    messages: list[tuple[int, bytes]], txs: int, size: int
) -> None:
    first, second = run(messages, txs, size), run(messages, txs, size)
    assert first == second
    heights = [b.height for b in first]
    assert heights == list(range(1, len(first) + 1))
    for prev, block in itertools.pairwise(first):
        assert block.first_offset > prev.last_offset
    for block in first:
        assert block.entries and len(block.entries) <= txs
