"""The objects projection: stored objects' metadata and grants from the IAM topic (D23).

Theory of operation
-------------------
* The data access proxy (:mod:`gateway.objects`) produces ``ObjectStored`` and
  ``ObjectAccessChanged`` to the institution's IAM topic through the IAM service's producer
  (the path every IAM event takes). This projection reads that topic with its own
  :class:`~projections.runner.ProjectionRunner` (name ``objects.<institution>``) and keeps
  ``objects.objects`` (one row per data id: the last ``ObjectStored`` wins, so a retried
  upload replaces its row) and ``objects.grants`` (one row per data id and subject, for the
  row's current upload). Every other event of the topic is the IAM projection's business
  and is skipped.
* :func:`fold` is the same projection as a pure function over decoded records: the audit
  (:mod:`readers.audit_objects`) compares the tables with it.
* :func:`reset` empties the two tables and the runner's positions; :func:`rebuild` then
  projects the topic again from offset 0. The chunks (``objects.chunks``) and the upload state
  (``objects.uploads``) exist only in PostgreSQL: they are never touched; a rebuilt row points
  at its chunks again by data id and upload id.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ledger.iam_events import Opened, open_message
from projections.iam import projection_name as iam_projection_name
from projections.migrate import apply_migrations
from projections.runner import Projection, ProjectionRunner
from runtime.kafka_config import consumer_config
from runtime.topics import DEFAULT_PREFIX, iam_topic

log = logging.getLogger("pantheon.projections.objects")

MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "objects"
NAMESPACE = "objects"
STORED = "pantheon.ObjectStored"
ACCESS = "pantheon.ObjectAccessChanged"
OBJECT_COLUMNS = (
    "data_id",
    "owner",
    "sha256",
    "size",
    "content_type",
    "metadata",
    "data_key_id",
    "upload_id",
    "chunk_count",
    "chunk_root",
    "anchor_tx",
    "anchor_height",
    "mac",
    "event_id",
    "stored_at_ms",
    "actor",
)
MISSING_TOPIC = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    }
)
"""Error codes of a watermark query on a topic that does not exist."""
GRANT_COLUMNS = ("data_id", "subject", "upload_id", "mac", "granted_by", "granted_at_ms")

Record = dict[str, Any]
Row = tuple[Any, ...]


def projection_name(institution: str) -> str:
    """The runner name (positions key) of an institution's objects projection."""
    return f"objects.{institution}"


def chunk_root(digests: Iterable[bytes]) -> bytes:
    """SHA-256 over the SHA-256 digests of an object's stored (sealed) chunks, in order."""
    h = hashlib.sha256(b"pantheon-object-chunks\x00")
    for d in digests:
        h.update(d)
    return h.digest()


def object_row(r: Record) -> Row:
    """The ``objects.objects`` row of an ``ObjectStored`` record (OBJECT_COLUMNS order)."""
    return (
        r["object_id"],
        r["owner"],
        r["sha256"],
        r["size"],
        r["content_type"],
        r["metadata"],
        r["data_key_id"],
        r["upload_id"],
        r["chunk_count"],
        r["chunk_root"],
        r["anchor_tx"],
        r["anchor_height"],
        r["mac"],
        r["event_id"],
        r["at_ms"],
        r["actor"],
    )


def grant_row(r: Record) -> Row:
    """The ``objects.grants`` row of a granting ``ObjectAccessChanged`` (GRANT_COLUMNS order)."""
    return (r["object_id"], r["subject"], r["upload_id"], r["mac"], r["actor"], r["at_ms"])


def fold(
    records: Iterable[tuple[str, Record]], institution: str
) -> tuple[dict[str, Row], dict[tuple[str, str], Row]]:
    """The tables the projection holds after ``records`` (decoded, in log order): objects by
    data id, grants by (data id, subject). Mirrors the SQL of :class:`ObjectsProjection`."""
    objects: dict[str, Row] = {}
    grants: dict[tuple[str, str], Row] = {}
    for schema, r in records:
        if r.get("institution_id") != institution:
            continue
        if schema == STORED:
            objects[r["object_id"]] = object_row(r)
            for key in [k for k, g in grants.items() if k[0] == r["object_id"]]:
                if grants[key][2] != r["upload_id"]:
                    del grants[key]
        elif schema == ACCESS:
            current = objects.get(r["object_id"])
            key = (r["object_id"], r["subject"])
            if r["granted"]:
                if current is not None and current[7] == r["upload_id"]:
                    grants[key] = grant_row(r)
            elif key in grants and grants[key][2] == r["upload_id"]:
                del grants[key]
    return objects, grants


def _stored(cur: psycopg.Cursor[Any], r: Record) -> None:
    columns = ", ".join(OBJECT_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in OBJECT_COLUMNS[1:])
    values = ", ".join(["%s"] * len(OBJECT_COLUMNS))
    cur.execute(
        f"INSERT INTO objects.objects ({columns}) VALUES ({values}) "
        f"ON CONFLICT (data_id) DO UPDATE SET {updates}",
        object_row(r),
    )
    cur.execute(
        "DELETE FROM objects.grants WHERE data_id = %s AND upload_id <> %s",
        (r["object_id"], r["upload_id"]),
    )


def _access(cur: psycopg.Cursor[Any], r: Record) -> None:
    if r["granted"]:
        cur.execute(
            f"INSERT INTO objects.grants ({', '.join(GRANT_COLUMNS)}) "
            "SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM objects.objects "
            "WHERE data_id = %s AND upload_id = %s) ON CONFLICT (data_id, subject) DO UPDATE "
            "SET upload_id = EXCLUDED.upload_id, mac = EXCLUDED.mac, "
            "granted_by = EXCLUDED.granted_by, granted_at_ms = EXCLUDED.granted_at_ms",
            (*grant_row(r), r["object_id"], r["upload_id"]),
        )
    else:
        cur.execute(
            "DELETE FROM objects.grants WHERE data_id = %s AND subject = %s AND upload_id = %s",
            (r["object_id"], r["subject"], r["upload_id"]),
        )


def open_event(value: bytes | None, institution: str) -> tuple[str, Record] | None:
    """The event inside a signed IAM-topic message (D21), or None if it does not open (the
    signature itself is the IAM projection's check, whose verdict the caller follows)."""
    opened = open_message(value if isinstance(value, bytes) else b"", institution)
    if not isinstance(opened, Opened):
        return None
    return opened.schema, opened.record


class ObjectsProjection(Projection):
    """Projection of the object events of one institution's IAM topic (module docstring)."""

    def __init__(self, institution: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.institution = institution
        self.topic = iam_topic(institution).name(prefix)
        self.name = projection_name(institution)

    def topics(self) -> list[str]:
        return [self.topic]

    def migrate(self, conn: psycopg.Connection[Any]) -> list[str]:
        """Create or upgrade the objects tables (shared with the gateway's store)."""
        return apply_migrations(conn, NAMESPACE, MIGRATIONS)

    def apply(self, cur: psycopg.Cursor[Any], batch: Sequence[Message]) -> int | None:
        """Apply the object events of ``batch`` that the IAM projection accepted (D21: it
        verifies every signature of the topic and records each accepted offset in
        ``iam_events``); stops (returns the count handled) at the first message the IAM
        projection has not decided yet, so a forged event is never applied here either. Only
        partition 0 counts, and the event must carry the ``event_id`` accepted at its offset."""
        if not batch:
            return None
        offsets = [msg.offset() or 0 for msg in batch]
        row = cur.execute(
            "SELECT next_offset FROM projection_positions "
            "WHERE projection = %s AND topic = %s AND partition = 0",
            (iam_projection_name(self.institution), self.topic),
        ).fetchone()
        decided = int(row[0]) if row else 0
        cur.execute(
            'SELECT "offset", event_id FROM iam_events WHERE "offset" = ANY(%s)', (offsets,)
        )
        accepted = {int(r[0]): str(r[1]) for r in cur.fetchall()}
        for index, (msg, offset) in enumerate(zip(batch, offsets, strict=True)):
            if msg.partition() != 0:
                # The IAM topic has one partition (DESIGN.md section 3), and the IAM
                # projection's verdicts are per offset of partition 0: a message on any other
                # partition someone added is never an accepted event.
                continue
            if offset >= decided:
                return index  # the IAM projection has not decided it yet: retried later
            event_id = accepted.get(offset)
            if event_id is None:
                continue  # refused (and counted) by the IAM projection, or not ours
            event = open_event(msg.value(), self.institution)
            if event is None:
                continue
            schema, record = event
            if record.get("event_id") != event_id:
                continue  # not the message the IAM projection accepted at this offset
            if schema in (STORED, ACCESS):
                (_stored if schema == STORED else _access)(cur, record)
        return None


def reset(conn: psycopg.Connection[Any], institution: str) -> None:
    """Empty the projected tables and positions (chunks and uploads stay)."""
    with conn.transaction():
        conn.execute("TRUNCATE objects.objects, objects.grants")
        conn.execute(
            "DELETE FROM projection_positions WHERE projection = %s",
            (projection_name(institution),),
        )


def rebuild(
    dsn: str,
    bootstrap: str,
    institution: str,
    prefix: str = DEFAULT_PREFIX,
    timeout: float = 120,
    *,
    end: int | None = None,
) -> int:
    """Reset and project the objects tables again from offset 0, up to ``end`` (default: the
    topic's end when called; the IAM projection must have decided up to there, D21); returns
    the number of messages read. Fails if a runner of it holds its lock."""
    projection = ObjectsProjection(institution, prefix=prefix)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        projection.migrate(conn)
    probe = Consumer(consumer_config(bootstrap, "objects-rebuild-probe"))
    try:
        topic_end = probe.get_watermark_offsets(
            TopicPartition(projection.topic, 0), timeout=10, cached=False
        )[1]
    except KafkaException as exc:
        if not exc.args or exc.args[0].code() not in MISSING_TOPIC:
            raise
        topic_end = 0  # no IAM topic (yet): nothing to project
    finally:
        probe.close()
    end = topic_end if end is None else min(end, topic_end)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        lock = "pantheon.projection:" + projection.name
        got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock,)).fetchone()
        if not got or not got[0]:
            raise RuntimeError(f"a runner of {projection.name} is running; stop it first")
        reset(conn, institution)
    runner = ProjectionRunner(dsn, bootstrap, projection)
    try:
        deadline = time.monotonic() + timeout
        while end > 0 and runner.positions().get((projection.topic, 0), 0) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{projection.topic} not projected to offset {end} in time")
            runner.step(0.5)
        return runner.messages
    finally:
        runner.close()
