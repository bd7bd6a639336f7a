"""The audit's projection check: an institution's ``chain`` tables against the replayed log.

Theory of operation
-------------------
* :func:`read_projection` reads every ``chain`` table of ``pantheon_<institution>`` in one
  REPEATABLE READ transaction, so the rows describe one height ``P`` (``chain.meta``). It is
  read *before* the logs, so the logs the audit reads cover everything the projector saw.
* :class:`ExpectedRows` is a block hook of :class:`~ledger.audit.ChainAudit`: for every
  replayed block up to ``P`` with a canonical copy it calls the projector's own row builder
  (:func:`projections.chain_rows.block_rows` into a :class:`~projections.rows.BatchRows` spanning
  the whole chain, where state tables keep the last write per key, exactly as the upserts
  do), so no projection rule is re-derived here; it also derives ``chain.meta``.
* :func:`compare` diffs each table (row counts, a digest per table, then every missing,
  unexpected or changed row with the differing columns) and checks the work-in-progress
  table ``pending_blocks`` byte for byte against the log (pending transactions are not
  stored: the projector re-reads them from the log, D20).
* Layer-2 leaves (``l2.leaves`` of ``projections/migrations/l2``, written by the batcher) are
  checked when their store exists in the database (:data:`L2_LEAVES_QUERY`); otherwise the
  check says it was skipped. Stored objects: :mod:`readers.audit_objects` (D23).

This module imports ``projections`` (the row builder), a departure from DESIGN.md section 1
(``streams`` may import ``ledger`` and ``schemas``) accepted so the audit cannot drift from the
projector; it is only imported when a projection is audited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ledger.audit import Canonical
from ledger.audit_findings import ERROR, INFO, Finding
from ledger.audit_stores import TableDiff, diff_table, normalize
from ledger.cutter import CutBlock
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.genesis import Genesis, genesis_state, genesis_writes
from ledger.results import ResultCode
from projections.chain_rows import block_rows
from projections.rows import APPEND_TABLES, STATE_TABLES, BatchRows, Row

APPEND_KEYS: Mapping[str, tuple[str, ...]] = {
    "blocks": ("height",),
    "block_votes": ("height", "position"),
    "transactions": ("height", "position"),
    "proposal_votes": ("proposal_id", "institution_id"),
    "asset_owners": ("asset_id", "height", "position"),
    "key_activity": ("key_id", "height"),
}
META_COLUMNS = (
    "chain_id",
    "genesis_hash",
    "height",
    "last_hash",
    "state_root",
    "last_tx_offset",
    "tx_count",
    "ok_count",
)
STATE_RECORD_COLUMNS = ("key", "record", "updated_height")


def table_specs() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every compared table: name -> (columns, key columns)."""
    specs = {t: (tuple(cols), APPEND_KEYS[t]) for t, cols in APPEND_TABLES.items()}
    specs["state_records"] = (STATE_RECORD_COLUMNS, ("key",))
    for spec in STATE_TABLES.values():
        specs[spec.table] = (tuple(spec.columns), tuple(spec.key_columns))
    specs["meta"] = (META_COLUMNS, ())
    return specs


@dataclass(slots=True)
class ProjectionSnapshot:
    """The chain tables of one database at one height."""

    height: int
    tables: dict[str, list[Row]]
    pending_blocks: dict[int, tuple[int, bytes]] = field(default_factory=dict)


class ProjectionMissing(RuntimeError):
    """The database has no chain projection."""


def read_projection(dsn: str) -> ProjectionSnapshot:
    """Every chain table of the database of ``dsn``, in one consistent snapshot."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            found = conn.execute("SELECT to_regclass('chain.meta')").fetchone()
            if found is None or found[0] is None:
                raise ProjectionMissing("no chain projection in this database (chain.meta)")
            tables: dict[str, list[Row]] = {}
            for table, (columns, _) in table_specs().items():
                query = sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.Identifier("chain", table),
                )
                tables[table] = [tuple(r) for r in conn.execute(query).fetchall()]
            if not tables["meta"]:
                raise ProjectionMissing("chain.meta is empty (projector never started)")
            height = int(tables["meta"][0][2])
            copies = conn.execute("SELECT source_offset, height, raw FROM chain.pending_blocks")
            pending_blocks = {int(o): (int(h), bytes(raw)) for o, h, raw in copies.fetchall()}
    return ProjectionSnapshot(height=height, tables=tables, pending_blocks=pending_blocks)


class ExpectedRows:
    """Block hook collecting the rows the projector must hold at height ``upto``."""

    def __init__(self, genesis: Genesis, machine: LedgerMachine, upto: int) -> None:
        self.upto = upto
        self.rows = BatchRows()
        self.rows.add_writes(genesis_writes(genesis), 0, lambda _key: None)
        self._machine = machine  # the audit's machine: state *before* each block
        self.meta: Row = (
            genesis.params.chain_id,
            genesis.hash(),
            0,
            genesis.hash(),
            genesis_state(genesis).root,
            -1,
            0,
            0,
        )
        self.reached = 0
        self.uncertified: list[int] = []

    def __call__(self, executed: ExecutedBlock, cut: CutBlock, canonical: Canonical | None) -> None:
        height = executed.header.height
        if height > self.upto:
            return
        if canonical is None or self.uncertified:
            self.uncertified.append(height)
            return
        block_rows(  # the projector's own row builder
            self.rows,
            executed,
            cut,
            canonical.certificate,
            canonical.offset,
            previous=self._machine.state.get,
        )
        ok = sum(1 for r in executed.results if r.code is ResultCode.OK)
        chain_id, genesis_hash, _, _, _, _, tx_count, ok_count = self.meta
        self.meta = (
            chain_id,
            genesis_hash,
            height,
            executed.block_hash,
            executed.header.state_root,
            cut.last_offset,
            tx_count + len(executed.results),
            ok_count + ok,
        )
        self.reached = height

    def tables(self) -> dict[str, list[Row]]:
        """Expected rows per table (same column order as :func:`table_specs`)."""
        out: dict[str, list[Row]] = {t: list(rows) for t, rows in self.rows.append.items()}
        out["state_records"] = []
        for table_spec in STATE_TABLES.values():
            out[table_spec.table] = []
        for key, (raw, height, record) in self.rows.state.items():
            if raw is None or record is None:
                continue
            out["state_records"].append((key, raw, height))
            prefix, _, _ = key.partition("/")
            spec = STATE_TABLES.get(prefix)
            if spec is not None:
                out[spec.table].append(spec.row(record, height))
        out["meta"] = [self.meta]
        return out


@dataclass(slots=True)
class ProjectionResult:
    """Per-table comparison and findings of the projection check."""

    institution: str
    projected_height: int
    tables: list[TableDiff] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "institution": self.institution,
            "projected_height": self.projected_height,
            "tables": [t.as_dict() for t in self.tables],
        }


def compare(
    institution: str,
    snapshot: ProjectionSnapshot,
    expected: ExpectedRows,
    block_messages: Mapping[int, bytes],
) -> ProjectionResult:
    """Diff every table; ``block_messages`` are the log messages at the offsets
    ``pending_blocks`` names."""
    result = ProjectionResult(institution=institution, projected_height=snapshot.height)
    if expected.reached < snapshot.height:
        result.findings.append(
            Finding(
                check="projection",
                kind="projection.ahead_of_log",
                severity=ERROR,
                message=f"pantheon_{institution} is projected to height {snapshot.height} but the "
                f"log has certified blocks only up to {expected.reached}",
                height=expected.reached + 1,
            )
        )
    got_tables = expected.tables()
    for table, (columns, keys) in table_specs().items():
        diff = diff_table(table, columns, keys, got_tables[table], snapshot.tables[table])
        result.tables.append(diff)
        result.findings.extend(diff.findings)
    for offset, (_, raw) in sorted(snapshot.pending_blocks.items()):
        if block_messages.get(offset) != raw:
            result.findings.append(
                Finding(
                    check="projection",
                    kind="pending.differs",
                    severity=ERROR,
                    message=f"chain.pending_blocks at offset {offset} differs from the blocks log",
                    offset=offset,
                    details={"table": "pending_blocks"},
                )
            )
    return result


# -- Layer 2 (a store owned by another part; checked when present) ----------------------------
L2_LEAVES_QUERY = "SELECT batch_id, leaf_index, leaf FROM l2.leaves ORDER BY batch_id, leaf_index"


def _exists(conn: psycopg.Connection[Any], relation: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (relation,)).fetchone()
    return row is not None and row[0] is not None


def stored_leaves(dsn: str) -> dict[str, list[bytes]] | None:
    """Stored Layer-2 leaves per batch id, or None when the database has no leaf store."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        if not _exists(conn, "l2.leaves"):
            return None
        out: dict[str, list[bytes]] = {}
        for batch_id, _, leaf in conn.execute(L2_LEAVES_QUERY).fetchall():
            out.setdefault(batch_id, []).append(bytes(leaf))
        return out


def skipped(check: str, what: str) -> Finding:
    """The notice that a store does not exist (yet), so its check did not run."""
    return Finding(
        check=check,
        kind=f"{check}.not_checked",
        severity=INFO,
        message=f"{what}: no store in this database, not checked",
    )


def rows_of(rows: Sequence[Row]) -> list[Row]:
    """Normalized rows (bytes, tuples) for display and tests."""
    return [normalize(r) for r in rows]
