"""The audit's IAM check: an institution's IAM tables against its signed IAM topic (D21).

Theory of operation
-------------------
* :func:`start` reads the IAM projection (every table of
  :data:`projections.iam.PROJECTION_TABLES` and its position on the topic) in one
  REPEATABLE READ snapshot, before the audit reads the chain logs, so the chain the audit
  replays covers every key height the projection relied on.
* :meth:`IamAudit.watch` wraps the chain audit's block hook: from every *certified* block the
  replay executes it derives the key history (:func:`ledger.iam_events.key_activity`, the
  rows the projector stores in ``chain.key_activity``) and the header stamps
  (:class:`ledger.iam_time.ChainClock`, D56). Keys and stamps are thus learnt from the logs
  with their quorum certificates, never from PostgreSQL.
* :meth:`IamAudit.finish` reads the IAM topic up to the projection's position and decides
  every message, with the broker's stamp, by the readers' own rule
  (:class:`ledger.iam_events.IamGate` with the clock and :data:`ledger.iam_time.SKEW_MS`): each
  refused message is a WARNING finding (``iam.refused``, with its offset and reason); an
  event whose key height the certified replay does not reach is an ERROR. A signed event
  whose ``actor`` was not allowed to act against the state folded from the events accepted
  before it (:func:`ledger.iam_authz.authorize`) is an ERROR (``iam.unauthorized``, with
  offset, actor and event): the gateway was made to sign it, e.g. from tampered tables. The accepted
  events are folded by the projection's own SQL handlers (:data:`projections.iam_handlers.HANDLERS`)
  into temporary tables shaped like the real ones, in a transaction that is rolled back, and
  every table is compared row by row: each missing, extra or changed row is an ERROR naming
  table, key, column, expected and actual (bytes as hex).

Like :mod:`readers.audit_projection`, this module imports ``projections`` (the IAM handlers)
so the audit cannot drift from the projection; it is only imported for ``--institution``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition
from psycopg import sql

from ledger.audit import Canonical, ChainAudit
from ledger.audit_findings import ERROR, INFO, WARNING, Finding
from ledger.audit_stores import diff_table
from ledger.cutter import CutBlock
from ledger.execution import ExecutedBlock
from ledger.genesis import Genesis, genesis_writes
from ledger.iam_events import IamGate, KeyHistory, Opened, Refusal, key_activity, needed_height
from ledger.iam_time import GENESIS_MS, ChainClock, Wait
from projections import iam as iam_projection
from projections import iam_handlers
from runtime.kafka_config import consumer_config
from runtime.topics import iam_topic

Row = tuple[Any, ...]


class IamAuditError(RuntimeError):
    """The IAM projection could not be read."""


KEYS: Mapping[str, tuple[str, ...]] = {
    "iam_users": ("user_id",),
    "iam_service_accounts": ("account_id",),
    "iam_groups": ("name",),
    "iam_memberships": ("user_id", "group_name"),
    "iam_grants": ("subject", "permission"),
    "iam_revoked_tokens": ("jti",),
    "iam_events": ("event_id",),
}


@dataclass(slots=True)
class IamSnapshot:
    """The IAM tables of one database and the topic position they describe."""

    position: int
    columns: dict[str, tuple[str, ...]]
    rows: dict[str, list[Row]]


def read_snapshot(dsn: str, institution: str, topic: str) -> IamSnapshot | None:
    """The IAM projection of the database of ``dsn`` (None: it has none)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            found = conn.execute("SELECT to_regclass('iam_events')").fetchone()
            if found is None or found[0] is None:
                return None
            row = conn.execute(
                "SELECT next_offset FROM projection_positions "
                "WHERE projection = %s AND topic = %s AND partition = 0",
                (iam_projection.projection_name(institution), topic),
            ).fetchone()
            columns, rows = _read_tables(conn, "public")
    return IamSnapshot(int(row[0]) if row else 0, columns, rows)


def _read_tables(
    conn: psycopg.Connection[Any], schema: str
) -> tuple[dict[str, tuple[str, ...]], dict[str, list[Row]]]:
    columns: dict[str, tuple[str, ...]] = {}
    rows: dict[str, list[Row]] = {}
    for table in KEYS:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            )
            columns[table] = tuple(d.name for d in cur.description or ())
            rows[table] = [tuple(r) for r in cur.fetchall()]
    return columns, rows


@dataclass(slots=True)
class IamAudit:
    """The IAM check of one audit run (see the module docstring)."""

    institution: str
    topic: str
    bootstrap: str
    dsn: str
    snapshot: IamSnapshot | None
    timeout: float = 30.0
    history: KeyHistory = field(default_factory=KeyHistory)
    #: header stamps of the certified blocks the replay executed (D56)
    clock: ChainClock = field(default_factory=ChainClock)
    certified_height: int = 0
    #: ``(offset, schema, event)`` of every message the IAM rule accepted, in log order (set
    #: by :meth:`finish`; the objects audit folds its events from these, D23)
    accepted_events: tuple[tuple[int, str, dict[str, Any]], ...] = ()
    _gap: bool = False

    def watch(self, audit: ChainAudit, genesis: Genesis) -> None:
        """Learn the key history from every certified block ``audit`` replays."""
        for row in key_activity(genesis_writes(genesis), 0, lambda _key: None):
            self.history.add(row)
        self.clock.append(0, GENESIS_MS)
        inner = audit.on_block

        def hook(executed: ExecutedBlock, cut: CutBlock, canonical: Canonical | None) -> None:
            if inner is not None:
                inner(executed, cut, canonical)
            if canonical is None or self._gap:
                self._gap = True  # keys above an uncertified block are not believed
                return
            height = executed.header.height
            for row in key_activity(executed.writes, height, audit.machine.state.get):
                self.history.add(row)
            self.clock.append(height, executed.header.timestamp_ms)
            self.certified_height = height

        audit.on_block = hook

    def _topic_values(self) -> list[tuple[int, tuple[int, int], bytes]]:
        """``(offset, broker stamp, value)`` of the messages before the position."""
        assert self.snapshot is not None
        end = self.snapshot.position
        out: list[tuple[int, tuple[int, int], bytes]] = []
        if end <= 0:
            return out
        consumer = Consumer(consumer_config(self.bootstrap, f"audit-iam-{self.institution}"))
        try:
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            while not out or out[-1][0] < end - 1:
                msg = consumer.poll(self.timeout)
                if msg is None:
                    raise TimeoutError(f"{self.topic}: no message before offset {end}")
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        raise TimeoutError(f"{self.topic} ends before offset {end}")
                    continue
                value = msg.value()
                raw = value if isinstance(value, bytes) else b""
                out.append((msg.offset() or 0, msg.timestamp(), raw))
        finally:
            consumer.close()
        return out

    def finish(self) -> tuple[list[Finding], dict[str, Any]]:
        """Findings and the report section (call after the chain replay)."""
        if self.snapshot is None:
            note = Finding(
                check="iam",
                kind="iam.skipped",
                severity=INFO,
                message=f"{self.institution} has no IAM projection",
            )
            return [note], {"skipped": True}
        findings: list[Finding] = []
        gate = IamGate(self.institution, self.history.at, clock=self.clock)
        accepted: list[tuple[int, Opened]] = []
        refused: dict[str, int] = {}
        certified = self.certified_height
        for offset, stamp, raw in self._topic_values():
            opened = gate.admit(raw, stamp)
            reason: str | None = None
            if opened is Refusal.UNAUTHORIZED and gate.unauthorized is not None:
                findings.append(self._unauthorized(offset, *gate.unauthorized))
                refused[str(opened)] = refused.get(str(opened), 0) + 1
                continue
            if isinstance(opened, Refusal):
                reason = str(opened)
            elif isinstance(opened, Wait) or needed_height(opened, gate.mark) > certified:
                reason = "beyond_certified_chain"  # decided live, so the live chain was past it
                findings.append(self._unverifiable(offset, opened))
            elif opened.schema not in iam_handlers.HANDLERS:
                reason = str(Refusal.BAD_EVENT)
            else:
                accepted.append((offset, opened))
                continue
            refused[reason] = refused.get(reason, 0) + 1
            if reason != "beyond_certified_chain":
                findings.append(
                    self._finding(
                        offset,
                        "iam.refused",
                        WARNING,
                        f"refused ({reason}); never applied",
                        {"reason": reason},
                    )
                )
        self.accepted_events = tuple((offset, o.schema, o.record) for offset, o in accepted)
        expected = self._fold(accepted)
        diffs = 0
        for table, key_columns in KEYS.items():
            table_findings = diff_rows(
                table,
                self.snapshot.columns[table],
                key_columns,
                expected[table],
                self.snapshot.rows[table],
            )
            diffs += len(table_findings)
            findings.extend(table_findings)
        summary = {
            "topic": self.topic,
            "position": self.snapshot.position,
            "certified_height": self.certified_height,
            "accepted": len(accepted),
            "refused": refused,
            "row_findings": diffs,
        }
        return findings, summary

    def _unverifiable(self, offset: int, opened: Opened | Wait) -> Finding:
        """The projection decided this event but the certified replay cannot: it has no
        block stamped after the time in question (D56), or not the key height named."""
        if isinstance(opened, Wait):
            why = (
                f"decided by the projection, but the certified chain ({self.certified_height}) "
                f"has no block stamped after {opened.after_ms} ms, so this audit cannot decide it"
            )
        else:
            why = (
                f"applied, but names key height {opened.key_height} above the "
                f"certified chain ({self.certified_height})"
            )
        return self._finding(offset, "iam.unverifiable", ERROR, why)

    def _unauthorized(self, offset: int, opened: Opened, why: str) -> Finding:
        actor = str(opened.record.get("actor", ""))
        event = opened.schema.rsplit(".", 1)[-1]
        return self._finding(
            offset,
            "iam.unauthorized",
            ERROR,
            f"{event} {opened.event_id} signed by the institution's IAM key, but its actor "
            f"{actor!r} was not allowed to act ({why}); never applied by a rebuild",
            {"actor": actor, "event": event, "event_id": opened.event_id, "why": why},
        )

    def _finding(
        self,
        offset: int,
        kind: str,
        severity: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> Finding:
        """A finding about the message at ``offset`` of the IAM topic."""
        return Finding(
            check="iam",
            kind=kind,
            severity=severity,
            topic=self.topic,
            offset=offset,
            message=f"{self.topic}@{offset}: {message}",
            details=details or {},
        )

    def _fold(self, accepted: Sequence[tuple[int, Opened]]) -> dict[str, list[Row]]:
        """The rows the projection must hold: the accepted events through its own handlers,
        into temporary tables (the transaction is rolled back)."""
        assert self.snapshot is not None
        with psycopg.connect(self.dsn, connect_timeout=10) as conn:
            try:
                with conn.cursor() as cur:
                    for table in KEYS:  # temporary tables come first in the search path
                        cur.execute(
                            sql.SQL(
                                "CREATE TEMP TABLE {} (LIKE public.{} INCLUDING ALL) ON COMMIT DROP"
                            ).format(sql.Identifier(table), sql.Identifier(table))
                        )
                    for offset, opened in accepted:
                        iam_handlers.HANDLERS[opened.schema](cur, opened.record)
                        cur.execute(
                            'INSERT INTO iam_events (event_id, "offset", key_id, key_height) '
                            "VALUES (%s, %s, %s, %s)",
                            (opened.event_id, offset, opened.key_id, opened.key_height),
                        )
                _, rows = _read_tables(conn, "pg_temp")
            finally:
                conn.rollback()
        return rows


def diff_rows(
    table: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    expected: Sequence[Row],
    actual: Sequence[Row],
) -> list[Finding]:
    """Every missing, unexpected or changed row of ``table`` (``iam.row.*``, bytes as hex)."""
    diff = diff_table(
        table, columns, key_columns, expected, actual, check="iam", kind="iam.row", name=table
    )
    return list(diff.findings)


def start(
    institution: str | None,
    dsn: Callable[[], str],
    bootstrap: str,
    prefix: str,
    timeout: float = 30.0,
) -> IamAudit | None:
    """The IAM check of ``institution`` with its projection read now (None: no institution)."""
    if institution is None:
        return None
    topic = iam_topic(institution).name(prefix)
    db = dsn()
    try:
        snapshot = read_snapshot(db, institution, topic)
    except psycopg.Error as exc:
        raise IamAuditError(str(exc)) from exc
    return IamAudit(institution, topic, bootstrap, db, snapshot, timeout)
