"""``pantheon audit``: stored objects' rows and chunks against the IAM topic and the chain (D23).

Theory of operation
-------------------
* In ONE database snapshot: ``objects.objects``, ``objects.grants``, the objects projection's
  position on the IAM topic, the SHA-256 of every stored chunk (computed by PostgreSQL, so no
  content crosses the wire), and the content of legacy plaintext uploads (before D23).
* The events of the IAM topic below that position whose signatures the audit's IAM check
  accepted (:mod:`readers.audit_iam`, which read the topic once, D21) are folded with
  :func:`projections.objects.fold` (the projection as a pure function): every missing,
  unexpected or changed metadata or grant row is an ERROR finding naming the table, key,
  column, expected and actual value (bytes as hex).
* Every anchor of the institution on the replayed chain that the data proxy made is checked
  against the ``ObjectStored`` event of its data id: the event must name the anchored hash,
  and the stored chunks must hash to the event's chunk root (``anchor.object_mismatch``
  otherwise, naming the chunks whose bytes changed); no event is ``anchor.object_missing``
  (INFO ``anchor.object_pending`` while its upload is still pending). Every
  ``ObjectStored`` without a matching anchor of this institution is ``objects.unanchored``.
  No key is needed: chunks are sealed under their owner's data key and checked as stored;
  the plaintext hash is bound to the chunks by the gateway, whose AES-GCM check at read time
  the audit cannot repeat without keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from ledger.audit_findings import ERROR, INFO, Finding
from ledger.audit_stores import check_anchor, diff_table
from projections.objects import (
    GRANT_COLUMNS,
    MISSING_TOPIC,
    OBJECT_COLUMNS,
    Row,
    chunk_root,
    fold,
    projection_name,
)
from readers.audit_projection import skipped
from runtime.kafka_config import consumer_config
from runtime.topics import iam_topic

CHECK = "objects"


class Snapshot:
    """What the database holds (see the module docstring)."""

    def __init__(self) -> None:
        self.objects: dict[str, Row] = {}
        self.grants: dict[tuple[str, str], Row] = {}
        self.position = 0
        self.chunks: dict[str, list[tuple[int, bytes, bytes | None]]] = {}
        self.legacy: dict[str, bytes] = {}
        self.pending: set[str] = set()
        self.present = False


def read_snapshot(dsn: str, institution: str) -> Snapshot:
    """The objects' tables of ``dsn`` in one repeatable-read snapshot."""
    snap = Snapshot()
    with psycopg.connect(dsn, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        found = conn.execute(
            "SELECT to_regclass('objects.grants'), to_regclass('projection_positions')"
        ).fetchone()
        if found is None or found[0] is None:
            return snap
        snap.present = True
        for r in conn.execute(f"SELECT {', '.join(OBJECT_COLUMNS)} FROM objects.objects"):
            snap.objects[r[0]] = tuple(r)
        for r in conn.execute(f"SELECT {', '.join(GRANT_COLUMNS)} FROM objects.grants"):
            snap.grants[(r[0], r[1])] = tuple(r)
        if found[1] is not None:
            pos = conn.execute(
                "SELECT next_offset FROM projection_positions WHERE projection = %s "
                "AND partition = 0",
                (projection_name(institution),),
            ).fetchone()
            snap.position = 0 if pos is None else int(pos[0])
        for data_id, seq, digest, stored in conn.execute(
            "SELECT data_id, seq, sha256(chunk), digest FROM objects.chunks ORDER BY data_id, seq"
        ):
            snap.chunks.setdefault(data_id, []).append(
                (int(seq), bytes(digest), None if stored is None else bytes(stored))
            )
        for data_id, content in conn.execute(
            "SELECT u.data_id, COALESCE(string_agg(c.chunk, ''::bytea ORDER BY c.seq), "
            "''::bytea) FROM objects.uploads u LEFT JOIN objects.chunks c "
            "ON c.data_id = u.data_id WHERE u.upload_id IS NULL AND u.status <> 'uploading' "
            "GROUP BY u.data_id"
        ):
            snap.legacy[data_id] = bytes(content)
        snap.pending = {
            r[0]
            for r in conn.execute(
                "SELECT data_id FROM objects.uploads WHERE status = 'pending' "
                "AND upload_id IS NOT NULL"
            )
        }
    return snap


def _topic_end(bootstrap: str, topic: str) -> int:
    consumer = Consumer(consumer_config(bootstrap, "pantheon-audit-objects-probe"))
    try:
        return int(
            consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
        )
    except KafkaException as exc:
        if exc.args and exc.args[0].code() in MISSING_TOPIC:
            return 0  # no IAM topic: no object events
        raise
    finally:
        consumer.close()


def diff_rows(
    table: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    expected: Mapping[Any, Row],
    actual: Mapping[Any, Row],
) -> list[Finding]:
    """Every missing, unexpected and changed row (``objects.row.*``, bytes as hex)."""
    diff = diff_table(
        table,
        columns,
        key_columns,
        expected.values(),
        actual.values(),
        check=CHECK,
        kind="objects.row",
        name=table,
    )
    return list(diff.findings)


def _check_chunks(data_id: str, event: Row, snap: Snapshot, height: int) -> list[Finding]:
    stored = snap.chunks.get(data_id, [])
    count, root = int(event[8]), bytes(event[9])
    if not stored and count:
        return [
            Finding(
                check="anchors",
                kind="anchor.object_missing",
                severity=ERROR,
                message=f"anchor {data_id!r}: no stored chunks",
                height=height,
            )
        ]
    digests = [d for _, d, _ in stored]
    if [s for s, _, _ in stored] == list(range(count)) and chunk_root(digests) == root:
        return []
    changed = [s for s, d, recorded in stored if recorded is not None and recorded != d]
    return [
        Finding(
            check="anchors",
            kind="anchor.object_mismatch",
            severity=ERROR,
            message=f"anchor {data_id!r}: the stored chunks do not hash to the chunk root of its "
            f"ObjectStored event (changed chunks: {changed or 'unknown'})",
            height=height,
            details={
                "table": "objects.chunks",
                "anchored": event[2],
                "chunk_root": root,
                "stored_root": chunk_root(digests),
                "chunks": len(stored),
                "expected_chunks": count,
                "changed_seqs": changed,
            },
        )
    ]


def check(
    dsn: str,
    bootstrap: str,
    prefix: str,
    institution: str,
    anchors: Iterable[Mapping[str, Any]],
    *,
    replayed_height: int | None = None,
    accepted: Sequence[tuple[int, str, dict[str, Any]]] = (),
) -> list[Finding]:
    """Every finding about the institution's stored objects (module docstring); ``anchors``
    are the institution's ``AnchorState`` records of the chain replayed up to
    ``replayed_height`` (objects anchored above it are left to the next audit); ``accepted``
    are ``(offset, schema, event)`` of the IAM topic's messages whose signatures the audit's
    IAM check accepted (D21), in log order: only those events are folded, as the objects
    projection follows the IAM projection."""
    snap = read_snapshot(dsn, institution)
    anchors = list(anchors)
    if not snap.present:
        return [skipped("anchors", "off-chain objects")]
    topic = iam_topic(institution).name(prefix)
    end = _topic_end(bootstrap, topic)
    findings: list[Finding] = []
    if snap.position > end:
        findings.append(
            Finding(
                check=CHECK,
                kind="objects.position_beyond_log",
                severity=ERROR,
                message=f"the objects projection claims offset {snap.position} of {topic}, which "
                f"ends at {end}",
                topic=topic,
                offset=snap.position,
            )
        )
    bound = min(snap.position, end)
    events = [(schema, record) for offset, schema, record in accepted if offset < bound]
    objects, grants = fold(events, institution)
    findings += diff_rows("objects.objects", OBJECT_COLUMNS, ("data_id",), objects, snap.objects)
    findings += diff_rows(
        "objects.grants", GRANT_COLUMNS, ("data_id", "subject"), grants, snap.grants
    )
    by_id = {a["data_id"]: a for a in anchors}
    for data_id, anchor in sorted(by_id.items()):
        event = objects.get(data_id)
        height = int(anchor["height"])
        if event is None and data_id in snap.pending:
            findings.append(
                Finding(
                    check="anchors",
                    kind="anchor.object_pending",
                    severity=INFO,
                    message=f"anchor {data_id!r}: its upload is not recorded yet (in progress, "
                    "or its events timed out: uploading it again completes it)",
                    height=height,
                )
            )
            continue
        if event is None:
            legacy = snap.legacy.get(data_id)
            findings += check_anchor(anchor, legacy)
            continue
        if bytes(event[2]) != bytes(anchor["sha256"]):
            findings.append(
                Finding(
                    check="anchors",
                    kind="anchor.object_mismatch",
                    severity=ERROR,
                    message=f"anchor {data_id!r}: its ObjectStored event names another hash",
                    height=height,
                    details={"anchored": anchor["sha256"], "event": event[2]},
                )
            )
            continue
        findings += _check_chunks(data_id, event, snap, height)
    for data_id in sorted(objects.keys() - by_id.keys()):
        if replayed_height is not None and int(objects[data_id][11]) > replayed_height:
            continue  # anchored after the replay's end: the next audit checks it
        findings.append(
            Finding(
                check=CHECK,
                kind="objects.unanchored",
                severity=ERROR,
                message=f"ObjectStored {data_id!r} has no anchor of {institution} on chain",
                details={"sha256": objects[data_id][2]},
            )
        )
    return findings
