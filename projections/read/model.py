"""The read model of the chain tables: one frozen dataclass per row kind (D42).

Each dataclass's fields are the columns its queries select (:func:`select`), so a column is
named once on the read side. The writer's columns (``projections.rows.APPEND_TABLES`` and
``STATE_TABLES``) are derived from these fields plus stated writer-only columns (D45), and
``tests/unit/test_read_model.py`` checks the GraphQL types against them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import psycopg

from runtime.pg import Conn


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    height: int
    hash: bytes
    prev_hash: bytes
    first_offset: int
    last_offset: int
    tx_root: bytes
    state_root: bytes
    validator_set_hash: bytes
    timestamp_ms: int
    tx_count: int
    ok_count: int
    certificate: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    height: int
    position: int
    tx_id: bytes
    tx_offset: int
    result_code: int
    sender: bytes | None
    nonce: int | None
    operation: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    key_id: bytes
    public_key: bytes
    role: str
    institution_id: str
    label: str
    active: bool
    next_nonce: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Institution:
    institution_id: str
    governance_key_id: bytes
    status: str
    effective_height: int
    operators: tuple[Key, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProposalVote:
    institution_id: str
    approve: bool
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    proposal_id: bytes
    kind: str
    institution_id: str
    proposer: str
    created_height: int
    expires_height: int
    status: str
    votes: tuple[ProposalVote, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    data_id: str
    sha256: bytes
    metadata: str
    institution_id: str
    anchored_by: bytes
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ownership:
    height: int
    position: int
    tx_id: bytes
    owner_key_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Asset:
    asset_id: str
    owner_key_id: bytes
    metadata: str
    registered_height: int
    history: tuple[Ownership, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class L2Batch:
    batch_id: str
    merkle_root: bytes
    leaf_count: int
    window_start_ms: int
    window_end_ms: int
    institution_id: str
    committed_by: bytes
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSummary:
    chain_id: str
    height: int
    last_hash: bytes
    tx_count: int
    ok_count: int


def columns(cls: type[Any]) -> str:
    """The column list of a read model dataclass: its fields, in order (one definition)."""
    return ", ".join(f.name for f in fields(cls))


def select(cls: type[Any], table: str) -> str:
    """``SELECT <the fields of cls> FROM table `` (a WHERE clause follows)."""
    return f"SELECT {columns(cls)} FROM {table} "


BLOCK = select(Block, "chain.blocks")
TX = select(Transaction, "chain.transactions")
KEY = select(Key, "chain.keys")
ANCHOR = select(Anchor, "chain.anchors")
BIG = 2**62  #: above every height: the first page of a newest-first list


def limited(query: str, limit: int) -> str:
    """``query`` (ending in its ORDER BY) with ``LIMIT <limit>`` as an integer literal (D68).

    A ``LIMIT %s`` parameter makes PostgreSQL cost its generic plan as if a tenth of the table
    were read, so a prepared newest-rows statement was planned again on every execution
    (D65); with the literal the generic plan wins after five custom ones. ``limit`` must be
    an ``int`` (not a bool): the text is ``str(int)``, nothing else is written into SQL. A
    negative limit fails the statement as the parameter did. Texts are kept for 64 pairs.
    """
    return _limited(query, int_literal(limit))


def int_literal(value: int) -> str:
    """``value`` as SQL text, the one way a number is written into a statement (D65, D68):
    only an ``int`` (not a bool, not a string) is accepted, so the text is digits only."""
    if type(value) is not int:
        raise TypeError(f"a LIMIT must be an int, not {type(value).__name__}")
    return str(value)


@lru_cache(maxsize=64)
def _limited(query: str, literal: str) -> str:
    return f"{query} LIMIT {literal}"


def fix(row: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}


def fetch_all(conn: Conn, cls: type[Any], query: str, params: tuple[Any, ...]) -> list[Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(query.encode(), params)
        return [cls(**fix(r)) for r in cur.fetchall()]
