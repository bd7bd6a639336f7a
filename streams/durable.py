"""A validator's durable state on local disk: its vote journal and its snapshots.

* **Vote journal.** Before a vote leaves the process, ``(height, block hash)`` is appended
  to ``votes.journal`` and fsynced. On restart the journal is read back, and a vote for a
  height already in it is only allowed for the same hash: a restarted validator never signs
  two different hashes for one height, even if its state were corrupted.
* **Snapshots.** The world state at a final height (``ledger.snapshot``), written to a
  temporary file, fsynced, renamed into place, and the directory fsynced; the two newest are
  kept, and loading falls back to the older one if the newest does not verify.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ledger.errors import DecodeError
from ledger.snapshot import SnapshotMeta, decode_snapshot, encode_snapshot
from ledger.state import WorldState

log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


class VoteJournal:
    """Append-only record of every (height, hash) this operator signed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.signed: dict[int, bytes] = {}
        if path.exists():
            text = path.read_text()
            complete, _, torn = text.rpartition("\n")
            if torn:  # a torn last line: its vote was never sent; cut it off
                with path.open("r+") as fh:
                    fh.truncate(len(complete.encode()) + (1 if complete else 0))
            for line in complete.splitlines():
                parts = line.split()
                if len(parts) == 2 and len(parts[1]) == 64:
                    with contextlib.suppress(ValueError):
                        self.signed.setdefault(int(parts[0]), bytes.fromhex(parts[1]))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a")

    def allow(self, height: int, block_hash: bytes) -> bool:
        """Record the intent to sign; False if a different hash was signed at ``height``."""
        previous = self.signed.get(height)
        if previous is not None:
            return previous == block_hash
        self._fh.write(f"{height} {block_hash.hex()}\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.signed[height] = block_hash
        return True

    def prune_below(self, height: int) -> None:
        """Forget heights below ``height`` (final and snapshotted): rewrite the file."""
        if not any(h < height for h in self.signed):
            return
        self.signed = {h: v for h, v in self.signed.items() if h >= height}
        self._fh.close()
        text = "".join(f"{h} {v.hex()}\n" for h, v in sorted(self.signed.items()))
        atomic_write(self.path, text.encode())
        self._fh = self.path.open("a")

    def close(self) -> None:
        self._fh.close()


class SnapshotStore:
    """The newest snapshots of one validator."""

    KEEP = 2

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, state: WorldState, meta: SnapshotMeta) -> Path:
        """Write a snapshot of ``state`` at ``meta.height``; prune older ones."""
        return self.save_encoded(meta.height, encode_snapshot(state, meta))

    def save_encoded(self, height: int, raw: bytes) -> Path:
        """Write the snapshot bytes ``raw`` of ``height``; prune older ones."""
        path = self.directory / f"snapshot-{height:012d}.bin"
        atomic_write(path, raw)
        for old in sorted(self.directory.glob("snapshot-*.bin"))[: -self.KEEP]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self, chain_id: str) -> tuple[WorldState, SnapshotMeta] | None:
        """The newest snapshot of ``chain_id`` that verifies, or None."""
        for path in sorted(self.directory.glob("snapshot-*.bin"), reverse=True):
            try:
                state, meta = decode_snapshot(path.read_bytes())
            except (OSError, DecodeError) as exc:
                log.warning("ignoring snapshot %s: %s", path.name, exc)
                continue
            if meta.chain_id != chain_id:
                log.warning("ignoring snapshot %s of chain %s", path.name, meta.chain_id)
                continue
            return state, meta
        return None
