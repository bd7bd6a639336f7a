"""A generic exactly-once runner: Kafka batches into Postgres, positions in the same transaction.

Theory of operation
-------------------
* A :class:`Projection` names its topics and writes the rows of a batch of messages with a
  cursor it is given. The runner owns the transaction: the rows of a batch and the new
  consumer positions (``projection_positions``: next offset to read per topic partition)
  commit together or not at all, so a crash at any point (SIGKILL included) neither loses
  nor duplicates a message's effect.
* Positions come from Postgres, never from Kafka's committed offsets: the consumer is
  *assigned* its partitions at the stored offsets (a partition never seen starts at 0).
  Messages below a stored position (a redelivery after a seek) are dropped before the
  projection sees them. The stored positions are mirrored to Kafka as the runner's group
  offsets every few seconds, for Kafka's own lag tools only: nothing reads them back.
* One runner per projection and database at a time: the runner holds a session advisory
  lock on the projection's name for as long as its connection lives (a second runner waits),
  and each position update is conditional on the previous value (a stale writer fails and
  rolls back instead of overwriting).
* Every hook below is a method of :class:`Projection` with a no-op default, overridden by
  the projections that need it (only the chain does today) and called unconditionally.
* A projection that keeps state in memory overrides ``resume``; it is called
  in a transaction whenever the runner (re)starts from the stored positions: at start, and
  after any failed batch (the in-memory state may be ahead of the rolled-back database).
* A projection may hold messages back (``commit_due``): a batch that cannot change
  what readers see (for the chain: transactions and receipts without a block to complete)
  is kept in memory and committed with the next one, at most :data:`MAX_HOLD_SECONDS` later
  or once ``batch_size`` messages are held. Nothing is acknowledged before it commits, so a
  crash only re-reads them; this saves a transaction per trickle of transactions.
* A projection may keep some consumed messages in memory only (``restart_offsets``): at
  each (re)start it names, per partition, the first offset it needs to see again, and the
  consumer is assigned there when that is below the stored position (for the chain: the
  transactions after the last projected block, re-read from the log instead of written to
  and deleted from a table; D20). Stored positions never move backwards; messages below
  them change nothing stored, so replaying them is safe.
* A projection may look at messages as they arrive (``read_ahead``), before they are
  held or applied, to prepare work in memory (for the chain: cut and execute the next block
  while its certificate is still being voted). Nothing it does there is stored; any failure
  resets it through ``resume``.
* A projection whose ``apply`` never uses ``COPY`` may set ``pipelined = True``: its whole
  transaction (BEGIN, rows, positions, COMMIT) then goes in psycopg's pipeline mode, so only
  statements whose results are read wait for the server: typically two round trips a batch.
* A projection may apply only a prefix of a batch (``apply`` returns how many leading
  messages it took): the positions move over that prefix only and the rest stays in memory,
  first in the next batch. The IAM projection waits so for the certified chain to reach the
  height a signed event names (D21); nothing is skipped and nothing is acknowledged early.
* Each commit ends with ``NOTIFY pantheon_positions`` so :func:`wait_for_offset` (read your
  writes) wakes up at once; it also polls, so a lost notification only delays it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from projections.migrate import apply_migrations
from runtime.heap import HeapSettler
from runtime.kafka_config import consume_ready, consumer_config

log = logging.getLogger("pantheon.projections.runner")

RUNNER_MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "runner"
CHANNEL = "pantheon_positions"
MAX_HOLD_SECONDS = 1.0
#: How often the stored positions are mirrored as Kafka consumer-group offsets (advisory).
ADVISE_SECONDS = 2.0
_LOCK_SALT = "pantheon.projection:"
# Every partition's position moves from the value this runner read to the new one, or the
# count shows another writer; the notification goes out in the same round trip.
_MOVE = (
    "WITH moved AS (UPDATE projection_positions AS p SET next_offset = v.next_offset "
    "FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[]) "
    "AS v(topic, partition, next_offset, previous) WHERE p.projection = %s "
    "AND p.topic = v.topic AND p.partition = v.partition AND p.next_offset = v.previous "
    "RETURNING 1) SELECT count(*), pg_notify(%s, %s) FROM moved"
)


class PositionConflict(RuntimeError):
    """Another writer moved this projection's positions: this runner must not continue."""


class Projection(ABC):
    """What the runner drives: a name, its topics, a batch writer, and its policy.

    ``topics`` and ``apply`` are required; every other hook has a no-op default that
    every projection inherits, and the runner calls them all unconditionally (D42): a
    projection states its policy by overriding a hook, never by the runner discovering it.
    """

    name: str
    #: ``apply`` never uses ``COPY``: the runner sends each transaction in pipeline mode.
    pipelined: bool = False

    @abstractmethod
    def topics(self) -> list[str]:
        """Full topic names to consume (every partition of each)."""

    @abstractmethod
    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Message]) -> int | None:
        """Write the rows of ``batch`` (log order per partition) with ``cur``; no commit.
        Returns None when all of it was applied, else how many leading messages were (the
        rest waits in memory and comes first in the next batch; see the module docstring)."""

    def resume(self, cur: psycopg.Cursor[Any]) -> None:
        """Rebuild any in-memory state from the committed tables (inside a transaction);
        called at every (re)start. Default: no state, nothing to do."""
        del cur

    def restart_offsets(self) -> Mapping[tuple[str, int], int]:
        """After ``resume``: per (topic, partition), the first offset to deliver again when
        it is below the stored position. Default: none (start at the stored positions)."""
        return {}

    def read_ahead(self, fresh: Sequence[Message]) -> None:
        """See ``fresh`` (messages just consumed, before they are held or applied) to
        prepare in memory; nothing is stored. Default: nothing."""
        del fresh

    def commit_due(self, fresh: Sequence[Message]) -> bool:
        """Whether the messages just read (``fresh``) are worth a transaction now (False:
        hold them, see the module docstring). Default: always."""
        del fresh
        return True


class ProjectionRunner:
    """Consumes a projection's topics and applies them exactly once (see module docstring)."""

    def __init__(
        self,
        dsn: str,
        bootstrap: str,
        projection: Projection,
        *,
        batch_size: int = 1000,
        group: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.projection = projection
        self.batch_size = batch_size
        #: Kafka consumer group whose offsets mirror the stored positions (advisory only).
        self.group = group or f"projection-{projection.name}"
        self._advised_at = 0.0
        self._conn: psycopg.Connection[Any] | None = None
        self._consumer: Consumer | None = None
        self._positions: dict[tuple[str, int], int] = {}
        #: Next offset the consumer delivers per partition (at or below the stored position
        #: after a rewind); messages below it are redeliveries and are dropped.
        self._delivered: dict[tuple[str, int], int] = {}
        self._needs_reset = True
        self._held: list[Message] = []
        #: Messages the projection could not apply yet (a partial ``apply``), retried first.
        self._waiting: list[Message] = []
        self._held_since = 0.0
        self.messages = 0
        self.batches = 0
        self._heap = HeapSettler()  # no full collection over the projection's state

    # -- lifecycle ------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        # A projection is rebuilt from the log, and its rows and positions commit together:
        # a crash that loses the last commits (not yet flushed) only makes the runner re-read
        # those messages, so commits need not wait for the WAL flush (D19).
        conn.execute("SET synchronous_commit = off")
        apply_migrations(conn, "runner", RUNNER_MIGRATIONS)
        waited = False
        while not conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK_SALT + self.projection.name,)
        ).fetchone()[0]:  # type: ignore[index]
            if not waited:
                log.warning("another runner holds %s; waiting", self.projection.name)
                waited = True
            time.sleep(0.2)
        self._conn = conn
        return conn

    def _kafka(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.bootstrap, self.group))
        return self._consumer

    def _partitions(self) -> list[tuple[str, int]]:
        consumer = self._kafka()
        out: list[tuple[str, int]] = []
        for topic in self.projection.topics():
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise RuntimeError(f"topic {topic} is not available")
            out.extend((topic, p) for p in sorted(meta.partitions))
        return out

    def _reset(self) -> None:
        """(Re)load positions and projection state from Postgres and seek the consumer."""
        if self._conn is not None and self._conn.closed:
            self._conn = None
        conn = self._connection()
        partitions = self._partitions()
        name = self.projection.name
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO projection_positions (projection, topic, partition, next_offset) "
                "VALUES (%s, %s, %s, 0) ON CONFLICT DO NOTHING",
                [(name, t, p) for t, p in partitions],
            )
            cur.execute(
                "SELECT topic, partition, next_offset FROM projection_positions "
                "WHERE projection = %s",
                (name,),
            )
            stored = {(str(t), int(p)): int(o) for t, p, o in cur.fetchall()}
            self.projection.resume(cur)
            rewind = self.projection.restart_offsets()
        self._positions = {tp: stored[tp] for tp in partitions}
        self._delivered = {tp: min(o, rewind.get(tp, o)) for tp, o in self._positions.items()}
        self._held = []
        self._waiting = []
        self._kafka().assign([TopicPartition(t, p, o) for (t, p), o in self._delivered.items()])
        self._needs_reset = False
        log.info("positions loaded", extra={"projection": name, "positions": str(stored)})

    def close(self) -> None:
        """Close the consumer and the connection (releases the runner lock)."""
        if self._consumer is not None:
            self._advise(force=True)
            self._consumer.close()
            self._consumer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._needs_reset = True

    # -- work -----------------------------------------------------------------------------
    def positions(self) -> dict[tuple[str, int], int]:
        """Committed next offsets by (topic, partition), as this runner knows them."""
        if self._needs_reset:
            self._reset()
        return dict(self._positions)

    def step(self, timeout: float = 0.5) -> int:
        """Consume and apply one batch; returns the number of messages applied.

        On any error the transaction is rolled back and the next call starts again from
        the stored positions (and calls ``resume``); the error is re-raised.
        """
        if self._needs_reset:
            self._reset()
        consumer = self._kafka()
        batch: list[Message] = []
        for msg in consume_ready(consumer, self.batch_size, timeout):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": str(error)})
                continue
            key = (msg.topic() or "", msg.partition() or 0)
            offset = msg.offset()
            if offset is not None and offset >= self._delivered.get(key, 0):
                batch.append(msg)
                self._delivered[key] = offset + 1
        if batch:
            try:
                self.projection.read_ahead(batch)
            except BaseException:
                self._needs_reset = True
                raise
        if self._hold(batch):
            return 0
        batch, self._held = self._held + batch, []
        batch, self._waiting = self._waiting + batch, []
        if not batch:
            return 0
        try:
            applied, advanced = self._commit(batch)
        except BaseException:
            self._needs_reset = True
            raise
        self._waiting = batch[applied:]
        self._positions.update(advanced)
        self.messages += applied
        self.batches += 1
        self._advise()
        self._heap.settle()
        return applied

    def _advise(self, *, force: bool = False) -> None:
        """Mirror the stored positions as the group's Kafka offsets, at most every
        ``ADVISE_SECONDS``, so that Kafka's own lag tools show progress. Advisory only: the
        positions of truth stay in PostgreSQL and a failed commit changes nothing."""
        now = time.monotonic()
        if self._consumer is None or not self._positions:
            return
        if not force and now - self._advised_at < ADVISE_SECONDS:
            return
        self._advised_at = now
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("advisory offsets not committed", extra={"error": str(exc)})

    def _hold(self, fresh: list[Message]) -> bool:
        """Keep ``fresh`` in memory instead of committing now (``Projection.commit_due``)?"""
        now = time.monotonic()
        if not self._held:
            if not fresh or self.projection.commit_due(fresh):
                return False
            self._held_since = now
        elif (
            now - self._held_since >= MAX_HOLD_SECONDS
            or len(self._held) + len(fresh) >= self.batch_size
            or self.projection.commit_due(fresh)
        ):
            return False
        self._held.extend(fresh)
        return True

    def _advanced(self, batch: Sequence[Message]) -> dict[tuple[str, int], int]:
        advanced: dict[tuple[str, int], int] = {}
        for msg in batch:
            key = (msg.topic() or "", msg.partition() or 0)
            next_offset = (msg.offset() or 0) + 1
            if next_offset > advanced.get(key, self._positions.get(key, 0)):
                advanced[key] = next_offset
        return advanced

    def _commit(self, batch: list[Message]) -> tuple[int, dict[tuple[str, int], int]]:
        """Apply ``batch`` (or the prefix the projection took) and move the positions over
        it in one transaction; returns (messages applied, new positions)."""
        conn = self._connection()
        name = self.projection.name
        pipeline = conn.pipeline() if self.projection.pipelined else None
        with pipeline or contextlib.nullcontext(), conn.transaction(), conn.cursor() as cur:
            taken = self.projection.apply(cur, batch)
            applied = len(batch) if taken is None else max(0, min(taken, len(batch)))
            advanced = self._advanced(batch[:applied])
            keys = list(advanced)
            if not keys:
                return applied, advanced
            cur.execute(
                _MOVE,
                (
                    [t for t, _ in keys],
                    [p for _, p in keys],
                    [advanced[k] for k in keys],
                    [self._positions[k] for k in keys],
                    name,
                    CHANNEL,
                    name,
                ),
            )
            row = cur.fetchone()
            if row is None or row[0] != len(keys):
                raise PositionConflict(f"{name}: positions moved under this runner")
        return applied, advanced

    def run(self, stop: threading.Event | None = None, *, idle_timeout: float = 0.5) -> None:
        """Apply batches until ``stop`` is set; database outages are retried with backoff."""
        stop = stop or threading.Event()
        backoff = 0.2
        try:
            while not stop.is_set():
                try:
                    self.step(idle_timeout)
                    backoff = 0.2
                except psycopg.OperationalError as exc:
                    log.warning("database unavailable, retrying", extra={"error": str(exc)})
                    if self._conn is not None:
                        self._conn.close()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self.close()

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages between the stored positions and the end of each partition."""
        consumer = self._kafka()
        out = {}
        for (topic, partition), position in self.positions().items():
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
            out[(topic, partition)] = max(0, high - position)
        return out


def stored_position(
    conn: psycopg.Connection[Any], projection: str, topic: str, partition: int
) -> int:
    """The committed next offset of one partition (0 if never written)."""
    row = conn.execute(
        "SELECT next_offset FROM projection_positions "
        "WHERE projection = %s AND topic = %s AND partition = %s",
        (projection, topic, partition),
    ).fetchone()
    return int(row[0]) if row else 0


def wait_for_offset(  # noqa: PLR0917 (the agreed signature)
    dsn: str, projection: str, topic: str, partition: int, offset: int, timeout: float
) -> bool:
    """Wait until the message at ``offset`` of ``topic[partition]`` is applied (its effect is
    committed): read-your-writes for a producer that knows its message's offset. Returns
    False on timeout."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        while True:
            try:
                if stored_position(conn, projection, topic, partition) > offset:
                    return True
            except psycopg.errors.UndefinedTable:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for _ in conn.notifies(timeout=min(remaining, 0.5), stop_after=1):
                pass
