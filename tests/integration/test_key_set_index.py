"""The explorer's replay queries (D49, D54) are served by ``transactions_operation``
(migration 004), not by a scan of every entry of the chain: EXPLAIN of the very statements
the gateway runs, on a chain of 6,000 entries of which 1% change the key set."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from gateway.envelopes import KEY_SET_OPERATIONS
from infra.postgres_server import Postgres
from projections.migrate import apply_migrations
from projections.projector import CHAIN_MIGRATIONS, ensure_database
from projections.read import queries

pytestmark = pytest.mark.integration
ENTRIES, PER_BLOCK = 6_000, 10


class Recording:
    """A connection that remembers the statements run through it (and runs them)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.statements: list[tuple[bytes, Any]] = []

    def execute(self, query: bytes, params: Any = None) -> Any:
        self.statements.append((query, params))
        return self.conn.execute(query, params)


def _chain(conn: psycopg.Connection[Any]) -> None:
    rows = []
    for i in range(ENTRIES):
        height, position = 1 + i // PER_BLOCK, i % PER_BLOCK
        operation = KEY_SET_OPERATIONS[i % 6] if i % 100 == 0 else "AnchorData"
        operation = "RegisterIdentity" if i % 100 == 50 else operation
        code = 0 if i % 7 else 3
        tx_id = i.to_bytes(32, "big")
        rows.append((height, position, tx_id, i, code, b"s", i, operation, b"e"))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO chain.transactions (height, position, tx_id, tx_offset, result_code, "
            "sender, nonce, operation, envelope) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        cur.executemany(
            "INSERT INTO chain.key_activity (key_id, height, institution_id, role, active, "
            "public_key) VALUES (%s, %s, 'inst-1', 'USER', true, %s)",
            # key k is registered by entry 100 k + 50, in block 10 k + 6
            [(bytes([k]) * 32, 10 * k + 6, bytes([k]) * 32) for k in range(ENTRIES // 100)],
        )
    conn.execute("ANALYZE chain.transactions")
    conn.execute("ANALYZE chain.key_activity")


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def _plan(conn: psycopg.Connection[Any], statement: tuple[bytes, Any]) -> list[dict[str, Any]]:
    query, params = statement
    row = conn.execute(b"EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    return _nodes(row[0][0]["Plan"])


def test_the_replay_queries_use_the_operation_index(postgres: Postgres) -> None:
    dsn = ensure_database(postgres.dsn("postgres"), f"k_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        apply_migrations(conn, "chain", CHAIN_MIGRATIONS)
        _chain(conn)
        recording = Recording(conn)
        listed = queries.accepted_of_operations(recording, list(KEY_SET_OPERATIONS), 0, 100)  # type: ignore[arg-type]
        assert len(listed) >= 50 and all(t.operation in KEY_SET_OPERATIONS for t in listed)
        assert all(t.result_code == 0 for t in listed)
        found = queries.registrations_of(recording, [bytes([1]) * 32, bytes([2]) * 32])  # type: ignore[arg-type]
        assert [t.height for t in found] == [16, 26]
        assert {t.operation for t in found} == {"RegisterIdentity"}
        assert len(recording.statements) >= 2
        for statement in recording.statements:
            nodes = _plan(conn, statement)
            on_transactions = [n for n in nodes if n.get("Relation Name") == "transactions"]
            assert on_transactions, nodes
            assert all(n["Node Type"] != "Seq Scan" for n in on_transactions), nodes
            assert any(n.get("Index Name") == "transactions_operation" for n in nodes), nodes
