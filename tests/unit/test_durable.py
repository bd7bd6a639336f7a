"""A validator's durable state: the vote journal and the snapshot store."""

from __future__ import annotations

from pathlib import Path

from ledger.genesis import genesis_state
from ledger.snapshot import SnapshotEncoder, SnapshotMeta, decode_snapshot, encode_snapshot
from ledger.state import WorldState, WriteSet
from streams.durable import SnapshotStore, VoteJournal
from tests.unit.chain_helpers import CHAIN, consortium

A, B = b"\xaa" * 32, b"\xbb" * 32


def test_journal_never_allows_a_second_hash_for_a_height_even_after_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "votes.journal"
    journal = VoteJournal(path)
    assert journal.allow(1, A)
    assert journal.allow(1, A)  # re-sending the same vote is fine
    assert not journal.allow(1, B)
    journal.close()
    with path.open("a") as fh:
        fh.write("2 bbbb")  # a torn last line: that vote was never sent
    reopened = VoteJournal(path)
    assert not reopened.allow(1, B)
    assert reopened.allow(2, A)
    reopened.prune_below(2)
    reopened.close()
    again = VoteJournal(path)
    assert again.signed == {2: A}
    again.close()


def test_snapshot_store_keeps_two_and_falls_back_when_the_newest_is_corrupt(
    tmp_path: Path,
) -> None:
    plan = consortium(4)
    state = genesis_state(plan.genesis)
    store = SnapshotStore(tmp_path)

    def at(height: int) -> tuple[WorldState, SnapshotMeta]:
        moved = WorldState.restore(state.items(), height=height, root=state.root)
        meta = SnapshotMeta(
            chain_id=CHAIN,
            height=height,
            block_hash=plan.genesis.hash(),
            state_root=state.root,
            tx_offset=height,
            votes_offset=0,
        )
        return moved, meta

    for height in (1, 2, 3):
        store.save(*at(height))
    assert [p.name for p in sorted(tmp_path.glob("snapshot-*.bin"))] == [
        "snapshot-000000000002.bin",
        "snapshot-000000000003.bin",
    ]
    newest = tmp_path / "snapshot-000000000003.bin"
    newest.write_bytes(newest.read_bytes()[:-3])  # torn
    loaded = store.load_latest(CHAIN)
    assert loaded is not None and loaded[1].tx_offset == 2
    assert store.load_latest("other-chain") is None


def test_a_snapshot_encoded_in_slices_of_a_copy_is_the_snapshot_of_the_state_copied(
    tmp_path: Path,
) -> None:
    plan = consortium(4)
    state = genesis_state(plan.genesis)
    meta = SnapshotMeta(
        chain_id=CHAIN,
        height=state.height,
        block_hash=plan.genesis.hash(),
        state_root=state.root,
        tx_offset=0,
        votes_offset=0,
    )
    whole = encode_snapshot(state, meta)
    copy = state.copy()
    encoder = SnapshotEncoder(copy, meta)
    # the original moves on while the copy is encoded: the copy must not
    first_key, first_record = next(state.items())
    state.commit(WriteSet(entries=((first_key, None),)), height=state.height + 1)
    slices = 0
    while (raw := encoder.step(1)) is None:
        slices += 1
    assert slices == len(copy) and len(state) == len(copy) - 1
    assert raw == whole
    restored, _ = decode_snapshot(raw)
    assert restored.get(first_key) == first_record and state.get(first_key) is None
    SnapshotStore(tmp_path).save_encoded(meta.height, raw)
    loaded = SnapshotStore(tmp_path).load_latest(CHAIN)
    assert loaded is not None and loaded[0].root == copy.root and len(loaded[0]) == len(copy)
