"""Rows of the chain tables, from executed blocks: accumulate a Kafka batch, write it at once.

Theory of operation
-------------------
* Nothing here decides anything about the ledger: a block's rows are its verified header
  and certificate, its entries with their result codes (as the core executed them), and its
  write set (key -> record or deletion) mapped column for column into a typed table chosen by
  the key's prefix (``inst/`` -> institutions, ``key/`` -> keys, ``prop/`` -> proposals,
  ``anchor/``, ``batch/``, ``asset/``, ``evidence/``); every record is also kept canonically
  in ``state_records`` (the state the projector resumes from).
* Three derived, append-only histories: ``proposal_votes`` (institutions that appear in a
  proposal's ``yes``/``no`` lists for the first time, with the block's height),
  ``asset_owners`` (the owner after each accepted ``RegisterAsset``/``TransferAsset``, per
  transaction), cross-checked against the block's write set, and ``key_activity`` (each
  key's institution, role and activity from the height it changed; the signers of IAM
  events are checked against it, D21).
* :class:`BatchRows` collects the rows of every block of a Kafka batch and writes them with
  one ``INSERT .. SELECT FROM unnest(..)`` per append-only table and one upsert per state
  table, where a later block's write of a key replaces an earlier one (so the last write of
  the batch wins, as in the state).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ledger.errors import StateError
from ledger.hashing import canonical_bytes
from ledger.iam_events import KEY_ACTIVITY_COLUMNS, key_activity
from ledger.state import Record, WriteSet, schema_for
from projections.read import model, queries

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class StateTable:
    """A typed table fed by one key prefix; its rows are built by column name."""

    table: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    key: Callable[[str], Row]
    #: Array columns: the record's sequence of that name, as a list.
    lists: frozenset[str] = frozenset()
    #: The record's fields of every column but ``updated_height``, in order (by name, in C).
    _fields: Callable[[Record], Row] = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(c for c in self.columns if c != "updated_height")
        if len(names) < 2 or "updated_height" in self.columns[:-1]:
            raise ValueError(f"{self.table}: two record columns or more, updated_height last")
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_fields", operator.itemgetter(*names))

    def row(self, record: Record, height: int) -> Row:
        """The row of ``record`` written at ``height``, column by column by name: each column
        is the record's field of that name, but ``updated_height``, the height of the write
        (array columns as lists)."""
        values: Row = self._fields(record)
        if self.lists:
            values = tuple(
                list(v) if name in self.lists else v
                for name, v in zip(self._names, values, strict=True)
            )
        if len(self._names) < len(self.columns):
            return (*values, height)
        return values


def model_columns(
    cls: type[Any], *, extra: Sequence[str] = (), derived: Collection[str] = ()
) -> tuple[str, ...]:
    """A table's columns from its read model dataclass: the fields (but ``derived``, which the
    read side assembles from other rows) and then the writer-only columns ``extra``. Refuses
    a ``derived`` name the dataclass does not have (one definition: a rename fails here)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if missing := set(derived) - set(names):
        raise ValueError(f"{cls.__name__} has no fields {sorted(missing)}")
    return (*(n for n in names if n not in derived), *extra)


def _hex_key(rest: str) -> Row:
    return (bytes.fromhex(rest),)


def _evidence_key(rest: str) -> Row:
    operator, height = rest.split("/", 1)
    return (bytes.fromhex(operator), int(height))


def _text_key(rest: str) -> Row:
    return (rest,)


STATE_TABLES: Mapping[str, StateTable] = {
    "inst": StateTable(
        "institutions",
        model_columns(
            model.Institution, derived={"operators"}, extra=("operator_key_ids", "updated_height")
        ),
        ("institution_id",),
        _text_key,
        lists=frozenset({"operator_key_ids"}),
    ),
    "key": StateTable(
        "keys", model_columns(model.Key, extra=("updated_height",)), ("key_id",), _hex_key
    ),
    "prop": StateTable(
        "proposals",
        model_columns(
            model.Proposal,
            derived={"votes"},  # from proposal_votes
            extra=("governance_public_key", "operator_public_keys", "yes", "no", "updated_height"),
        ),
        ("proposal_id",),
        _hex_key,
        lists=frozenset({"operator_public_keys", "yes", "no"}),
    ),
    "anchor": StateTable("anchors", model_columns(model.Anchor), ("data_id",), _text_key),
    "batch": StateTable("l2_batches", model_columns(model.L2Batch), ("batch_id",), _text_key),
    "asset": StateTable(
        "assets",
        model_columns(model.Asset, derived={"history"}, extra=("updated_height",)),
        ("asset_id",),
        _text_key,
    ),
    # No read model: evidence is audited, not served.
    "evidence": StateTable(
        "evidence",
        ("operator_key_id", "height", "institution_id", "hash_a", "hash_b", "reported_height"),
        ("operator_key_id", "height"),
        _evidence_key,
    ),
}

APPEND_TABLES: Mapping[str, tuple[str, ...]] = {
    # source_offset: where the certified copy was read (the audit)
    "blocks": model_columns(model.Block, extra=("source_offset",)),
    "block_votes": ("height", *model_columns(queries.CertificateVote)),
    # envelope: the signed bytes, read by ``accepted_tx`` (proofs)
    "transactions": model_columns(model.Transaction, extra=("envelope",)),
    "proposal_votes": ("proposal_id", *model_columns(model.ProposalVote)),
    "asset_owners": ("asset_id", *model_columns(model.Ownership)),
    "key_activity": KEY_ACTIVITY_COLUMNS,
}
"""Append-only tables' columns: a read model's fields and the writer-only ones (D45)."""


def new_votes(old: Record | None, new: Record, height: int) -> list[dict[str, Any]]:
    """Votes that ``new`` (a proposal record) adds to ``old``: ``proposal_votes`` rows."""
    rows: list[dict[str, Any]] = []
    for side, approve in (("yes", True), ("no", False)):
        before = set(old[side]) if old is not None else set()
        rows.extend(
            {
                "proposal_id": new["proposal_id"],
                "institution_id": inst,
                "approve": approve,
                "height": height,
            }
            for inst in sorted(set(new[side]) - before)
        )
    return rows


@dataclass(slots=True)
class BatchRows:
    """The rows of the blocks projected in one Kafka batch."""

    append: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in APPEND_TABLES})
    state: dict[str, tuple[bytes | None, int, Record | None]] = field(default_factory=dict)

    def add_writes(
        self, writes: WriteSet, height: int, previous: Callable[[str], Record | None]
    ) -> None:
        """A block's write set; ``previous(key)`` is the record before the block."""
        for key, record in writes.entries:
            raw = None if record is None else canonical_bytes(schema_for(key), record)
            self.state[key] = (raw, height, record)
            if key.startswith("prop/") and record is not None:
                self.add_named("proposal_votes", new_votes(previous(key), record, height))
        self.append["key_activity"].extend(key_activity(writes, height, previous))

    def merge(self, later: BatchRows) -> None:
        """Add the rows of ``later`` (collected for the blocks after these ones)."""
        for table, rows in later.append.items():
            self.append[table].extend(rows)
        self.state.update(later.state)

    def add(self, table: str, rows: Sequence[Row]) -> None:
        """Rows of an append-only table (tuples in ``APPEND_TABLES`` column order)."""
        self.append[table].extend(rows)

    def add_named(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows of an append-only table by column name: each must name exactly the columns
        of ``APPEND_TABLES[table]`` (a missing one raises KeyError, an extra ValueError)."""
        names = APPEND_TABLES[table]
        out = self.append[table]
        for row in rows:
            if len(row) != len(names):
                raise ValueError(f"{table}: columns {sorted(row)} are not {list(names)}")
            out.append(tuple(row[name] for name in names))

    @property
    def empty(self) -> bool:
        """Whether nothing was collected."""
        return not self.state and not any(self.append.values())

    def write(self, cur: psycopg.Cursor[Any]) -> int:
        """Write everything with ``cur`` (inside the caller's transaction); returns row count.

        One statement per table (column arrays through ``unnest``, bound in binary) and no
        result to wait for: in pipeline mode (the runner's, for the chain) they cost no round
        trip of their own. That is as fast as ``COPY`` into staging tables for thousands of
        rows, and several times faster for a live block's few hundred on busy cores, where
        each round trip waits for a time slice."""
        upserts, deletes, removed = self._state_rows()
        types = column_types(cur)
        for table, columns in APPEND_TABLES.items():
            insert_rows(cur, types, TableRows(table, columns, (), self.append[table]))
        for item in upserts:
            insert_rows(cur, types, item)
        self._delete_state(cur, deletes, removed)
        return (
            sum(len(rows) for rows in self.append.values())
            + sum(len(u.rows) for u in upserts)
            + len(removed)
        )

    def _state_rows(self) -> tuple[list[TableRows], dict[str, list[Row]], list[str]]:
        """(upserts, deleted keys' rows per prefix, deleted state keys)."""
        upserts: dict[str, list[Row]] = {p: [] for p in STATE_TABLES}
        deletes: dict[str, list[Row]] = {p: [] for p in STATE_TABLES}
        records: list[Row] = []
        removed: list[str] = []
        for key, (raw, height, record) in self.state.items():
            prefix, _, rest = key.partition("/")
            spec = STATE_TABLES.get(prefix)
            if raw is None:
                removed.append(key)
                if spec is not None:
                    deletes[prefix].append(spec.key(rest))
                continue
            assert record is not None
            records.append((key, raw, height))
            if spec is not None:
                upserts[prefix].append(spec.row(record, height))
        return (
            [
                TableRows("state_records", ("key", "record", "updated_height"), ("key",), records),
                *(
                    TableRows(
                        spec.table, tuple(spec.columns), tuple(spec.key_columns), upserts[prefix]
                    )
                    for prefix, spec in STATE_TABLES.items()
                ),
            ],
            deletes,
            removed,
        )

    @staticmethod
    def _delete_state(
        cur: psycopg.Cursor[Any], deletes: dict[str, list[Row]], removed: list[str]
    ) -> None:
        if removed:
            cur.execute("DELETE FROM chain.state_records WHERE key = ANY(%s)", (removed,))
        for prefix, spec in STATE_TABLES.items():
            if deletes[prefix]:
                condition = sql.SQL(" AND ").join(
                    sql.SQL("{} = %s").format(sql.Identifier(c)) for c in spec.key_columns
                )
                cur.executemany(
                    sql.SQL("DELETE FROM {} WHERE {}").format(
                        sql.Identifier("chain", spec.table), condition
                    ),
                    deletes[prefix],
                )


@dataclass(frozen=True, slots=True)
class TableRows:
    """Rows (unique keys) to insert or update in ``chain.<table>`` (no key columns: insert)."""

    table: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    rows: Sequence[Row]


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


_COLUMN_TYPES: dict[tuple[str, str], str] = {}


def column_types(cur: psycopg.Cursor[Any]) -> Mapping[tuple[str, str], str]:
    """SQL type of every column of the ``chain`` tables, by (table, column); read once per
    process (the schema is this package's migrations)."""
    if not _COLUMN_TYPES:
        cur.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = 'chain'::regnamespace AND c.relkind = 'r' "
            "AND a.attnum > 0 AND NOT a.attisdropped"
        )
        _COLUMN_TYPES.update(((str(t), str(c)), str(ty)) for t, c, ty in cur.fetchall())
    return _COLUMN_TYPES


@functools.lru_cache(maxsize=64)
def _insert_sql(
    table: str, columns: tuple[str, ...], keys: tuple[str, ...], types: tuple[str, ...] | None
) -> str:
    """``INSERT`` of one row (``types`` None) or of column arrays through ``unnest`` (one
    array parameter per column, cast to ``types``), with ``ON CONFLICT`` when ``keys``.

    Names and types are this module's constants and the catalog's, never input."""
    names = _quoted(columns)
    if types is None:
        source = "VALUES (" + ", ".join(["%s"] * len(columns)) + ")"
    else:
        source = "SELECT * FROM unnest(" + ", ".join(f"%b::{t}[]" for t in types) + ")"
    statement = f'INSERT INTO "chain"."{table}" ({names}) {source}'
    if keys:
        updates = [c for c in columns if c not in keys]
        action = (
            "DO UPDATE SET " + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in updates)
            if updates
            else "DO NOTHING"
        )
        statement += f" ON CONFLICT ({_quoted(keys)}) {action}"
    return statement


def insert_rows(
    cur: psycopg.Cursor[Any], types: Mapping[tuple[str, str], str], item: TableRows
) -> None:
    """Insert (or upsert, when ``item`` has key columns) ``item.rows`` with one statement:
    column arrays through ``unnest``; a table with array columns (``unnest`` would flatten
    them) gets one ``INSERT`` per row instead (pipelined like the rest: few rows, rare)."""
    if not item.rows:
        return
    column_types_ = tuple(types[(item.table, c)] for c in item.columns)
    if any(t.endswith("[]") for t in column_types_):
        cur.executemany(_insert_sql(item.table, item.columns, item.key_columns, None), item.rows)
        return
    statement = _insert_sql(item.table, item.columns, item.key_columns, column_types_)
    cur.execute(statement.encode(), [list(column) for column in zip(*item.rows, strict=True)])


def check_owners(writes: WriteSet, owners: Mapping[str, bytes]) -> None:
    """The last owner per asset from the block's transactions must be the write set's."""
    written = {k.removeprefix("asset/"): r for k, r in writes.entries if k.startswith("asset/")}
    for asset_id, owner in owners.items():
        record = written.get(asset_id)
        if record is None or bytes(record["owner_key_id"]) != owner:
            raise StateError(f"asset {asset_id!r}: ownership history disagrees with the state")
