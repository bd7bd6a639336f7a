"""Layer-2 tables (schema ``l2``) of an institution's database: the batcher's store.

Theory of operation
-------------------
* :func:`seal` writes everything one batching window produced in ONE transaction: the batch
  (state ``sealed``), its leaves, the devices' last accepted sequences, the rejected messages
  (an outbox for ``<prefix>l2.rejected``) and the new consumer position of the partition. The
  position update is conditional on the previous value, so a second batcher that still
  believes it owns the partition (a zombie after a rebalance) fails and rolls back
  (:class:`PositionConflict`) instead of sealing the same offsets again; the unique index on
  ``(device_key_id, first_sequence)`` makes a reading in two batches impossible as well.
* The CommitBatch transaction is submitted only for sealed batches (:func:`pending_batches`)
  and :func:`mark_committed` records the outcome, so a root on chain always has its leaves in
  Postgres.
* Device state comes from the chain projection (``chain.keys``, role ``DEVICE``), and the
  batcher's nonce from ``chain.keys.next_nonce`` at a known projected height.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.l2 import DeviceInfo
from projections.migrate import apply_migrations
from runtime.pg import Conn

L2_MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "l2"


class PositionConflict(RuntimeError):
    """Another batcher moved this partition's position: this one must re-read its state."""


def migrate(conn: Conn) -> list[str]:
    """Apply the ``l2`` migrations (``conn`` in autocommit mode)."""
    return apply_migrations(conn, "l2", L2_MIGRATIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf:
    """One Merkle leaf of a batch."""

    device_key_id: bytes
    first_sequence: int
    last_sequence: int
    kind: int  # 0 record, 1 bundle
    leaf: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """One refused message."""

    offset: int
    reason: str
    device_key_id: bytes
    sequence: int
    raw: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """A batch as sealed (what its CommitBatch transaction carries)."""

    batch_id: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    merkle_root: bytes
    leaf_count: int
    record_count: int
    window_start_ms: int
    window_end_ms: int

    def commit_args(self) -> dict[str, Any]:
        """Arguments of the ``CommitBatch`` transaction."""
        return {
            "batch_id": self.batch_id,
            "merkle_root": self.merkle_root,
            "leaf_count": self.leaf_count,
            "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms,
        }


def load_positions(
    conn: Conn, consumer: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """Next offset per partition (created at 0 when never seen)."""
    parts = list(partitions)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO l2.positions (consumer, topic, partition, next_offset) "
            "VALUES (%s, %s, %s, 0) ON CONFLICT DO NOTHING",
            [(consumer, topic, p) for p in parts],
        )
        cur.execute(
            "SELECT partition, next_offset FROM l2.positions "
            "WHERE consumer = %s AND topic = %s AND partition = ANY(%s)",
            (consumer, topic, parts),
        )
        return {int(p): int(o) for p, o in cur.fetchall()}


def load_sequences(conn: Conn) -> dict[bytes, int]:
    """Last accepted sequence of every device seen."""
    rows = conn.execute("SELECT device_key_id, last_sequence FROM l2.device_sequences").fetchall()
    return {bytes(k): int(s) for k, s in rows}


def load_devices(conn: Conn) -> dict[bytes, DeviceInfo]:
    """Every device key of the chain projection (active or revoked)."""
    rows = conn.execute(
        "SELECT key_id, public_key, institution_id, active FROM chain.keys WHERE role = 'DEVICE'"
    ).fetchall()
    return {
        bytes(k): DeviceInfo(public_key=bytes(p), institution_id=i, active=bool(a))
        for k, p, i, a in rows
    }


def seal(
    conn: Conn,
    *,
    consumer: str,
    topic: str,
    partition: int,
    old_next: int,
    new_next: int,
    batch: Batch | None,
    leaves: Sequence[Leaf],
    sequences: dict[bytes, int],
    rejected: Sequence[Rejected],
) -> None:
    """Store one window's outcome and move the position, atomically (see module docstring)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE l2.positions SET next_offset = %s WHERE consumer = %s AND topic = %s "
            "AND partition = %s AND next_offset = %s",
            (new_next, consumer, topic, partition, old_next),
        )
        if cur.rowcount != 1:
            raise PositionConflict(f"{topic}[{partition}] moved under this batcher")
        if batch is not None:
            cur.execute(
                "INSERT INTO l2.batches (batch_id, consumer, topic, partition, first_offset, "
                "last_offset, merkle_root, leaf_count, record_count, window_start_ms, "
                "window_end_ms, state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "'sealed')",
                (
                    batch.batch_id,
                    consumer,
                    batch.topic,
                    batch.partition,
                    batch.first_offset,
                    batch.last_offset,
                    batch.merkle_root,
                    batch.leaf_count,
                    batch.record_count,
                    batch.window_start_ms,
                    batch.window_end_ms,
                ),
            )
            with cur.copy(
                "COPY l2.leaves (batch_id, leaf_index, device_key_id, first_sequence, "
                "last_sequence, kind, leaf) FROM STDIN"
            ) as copy:
                for i, leaf in enumerate(leaves):
                    copy.write_row(
                        (
                            batch.batch_id,
                            i,
                            leaf.device_key_id,
                            leaf.first_sequence,
                            leaf.last_sequence,
                            leaf.kind,
                            leaf.leaf,
                        )
                    )
        if sequences:
            cur.executemany(
                "INSERT INTO l2.device_sequences (device_key_id, last_sequence) VALUES (%s, %s) "
                "ON CONFLICT (device_key_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence",
                list(sequences.items()),
            )
        if rejected:
            cur.executemany(
                'INSERT INTO l2.rejected (topic, partition, "offset", reason, device_key_id, '
                "sequence, raw) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (topic, partition, r.offset, r.reason, r.device_key_id, r.sequence, r.raw)
                    for r in rejected
                ],
            )


_BATCH_COLS = (
    "batch_id, topic, partition, first_offset, last_offset, merkle_root, leaf_count, "
    "record_count, window_start_ms, window_end_ms"
)


def _batch(row: Sequence[Any]) -> Batch:
    return Batch(
        batch_id=row[0],
        topic=row[1],
        partition=row[2],
        first_offset=row[3],
        last_offset=row[4],
        merkle_root=bytes(row[5]),
        leaf_count=row[6],
        record_count=row[7],
        window_start_ms=row[8],
        window_end_ms=row[9],
    )


def pending_batches(
    conn: Conn, consumer: str, partitions: Iterable[int], limit: int = 500
) -> list[Batch]:
    """Sealed batches of ``partitions`` whose CommitBatch is not confirmed yet, oldest first."""
    rows = conn.execute(
        f"SELECT {_BATCH_COLS} FROM l2.batches WHERE state = 'sealed' AND consumer = %s "
        "AND partition = ANY(%s) ORDER BY seq LIMIT %s",
        (consumer, sorted(partitions), limit),
    ).fetchall()
    return [_batch(r) for r in rows]


def batch(conn: Conn, batch_id: str) -> Batch | None:
    """One stored batch."""
    row = conn.execute(
        f"SELECT {_BATCH_COLS} FROM l2.batches WHERE batch_id = %s", (batch_id,)
    ).fetchone()
    return _batch(row) if row else None


def on_chain(conn: Conn, batch_ids: Sequence[str]) -> set[str]:
    """Which of ``batch_ids`` the chain projection already holds (committed by any attempt)."""
    rows = conn.execute(
        "SELECT batch_id FROM chain.l2_batches WHERE batch_id = ANY(%s)", (list(batch_ids),)
    ).fetchall()
    return {str(r[0]) for r in rows}


def mark_committed(conn: Conn, batch_id: str, tx_id: bytes | None, result_code: int) -> None:
    """The CommitBatch of ``batch_id`` is on chain (OK, or ALREADY_EXISTS from an earlier try;
    ``tx_id`` None when it was found on chain, committed by a try this process never saw)."""
    with conn.transaction():
        conn.execute(
            "UPDATE l2.batches SET state = 'committed', tx_id = %s, result_code = %s, "
            "committed_at = now() WHERE batch_id = %s AND state = 'sealed'",
            (tx_id, result_code, batch_id),
        )


def unpublished_rejected(conn: Conn, limit: int = 5000) -> list[tuple[str, int, Rejected]]:
    """Rejected messages not yet produced to the rejected topic."""
    rows = conn.execute(
        'SELECT topic, partition, "offset", reason, device_key_id, sequence, raw '
        'FROM l2.rejected WHERE NOT published ORDER BY topic, partition, "offset" LIMIT %s',
        (limit,),
    ).fetchall()
    return [
        (t, p, Rejected(offset=o, reason=r, device_key_id=bytes(d), sequence=s, raw=bytes(w)))
        for t, p, o, r, d, s, w in rows
    ]


def mark_published(conn: Conn, keys: Sequence[tuple[str, int, int]]) -> None:
    """Rejected messages delivered to the rejected topic."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "UPDATE l2.rejected SET published = true WHERE topic = %s AND partition = %s "
            'AND "offset" = %s',
            list(keys),
        )


def projected_height(conn: Conn) -> int:
    """Height of the chain projection (-1 if it has not started)."""
    row = conn.execute("SELECT height FROM chain.meta").fetchone()
    return int(row[0]) if row else -1


def chain_key(conn: Conn, key_id: bytes) -> tuple[str, str, bool, int] | None:
    """(role, institution, active, next_nonce) of a key in the chain projection."""
    row = conn.execute(
        "SELECT role, institution_id, active, next_nonce FROM chain.keys WHERE key_id = %s",
        (key_id,),
    ).fetchone()
    return (str(row[0]), str(row[1]), bool(row[2]), int(row[3])) if row else None


def leaf_of(conn: Conn, device_key_id: bytes, sequence: int) -> tuple[str, int, int, bytes] | None:
    """(batch id, leaf index, kind, leaf) of the leaf holding a device's ``sequence``."""
    row = conn.execute(
        "SELECT batch_id, leaf_index, kind, leaf, last_sequence FROM l2.leaves "
        "WHERE device_key_id = %s AND first_sequence <= %s "
        "ORDER BY first_sequence DESC LIMIT 1",
        (device_key_id, sequence),
    ).fetchone()
    if row is None or int(row[4]) < sequence:
        return None
    return str(row[0]), int(row[1]), int(row[2]), bytes(row[3])


def batch_leaves(conn: Conn, batch_id: str) -> list[bytes]:
    """The leaves of a batch in order."""
    rows = conn.execute(
        "SELECT leaf FROM l2.leaves WHERE batch_id = %s ORDER BY leaf_index", (batch_id,)
    ).fetchall()
    return [bytes(r[0]) for r in rows]
