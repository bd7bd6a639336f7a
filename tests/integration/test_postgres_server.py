"""The real project-local PostgreSQL: rows round-trip, transactions are atomic."""

from __future__ import annotations

import psycopg
import pytest

from infra.postgres_server import Postgres

pytestmark = pytest.mark.integration


def test_rows_round_trip_through_copy_and_select(postgres: Postgres, unique: str) -> None:
    rows = [(i, f"device-{i}", bytes([i % 256]) * 32) for i in range(1000)]
    with psycopg.connect(postgres.dsn()) as conn:
        conn.execute(f"CREATE TABLE rt_{unique} (id bigint PRIMARY KEY, name text, h bytea)")
        with conn.cursor().copy(f"COPY rt_{unique} (id, name, h) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    with psycopg.connect(postgres.dsn()) as conn:
        got = conn.execute(f"SELECT id, name, h FROM rt_{unique} ORDER BY id").fetchall()
    assert got == rows


def test_a_failed_transaction_leaves_nothing_behind(postgres: Postgres, unique: str) -> None:
    with psycopg.connect(postgres.dsn()) as conn:
        conn.execute(f"CREATE TABLE tx_{unique} (id int PRIMARY KEY)")
    with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(postgres.dsn()) as conn:
        conn.execute(f"INSERT INTO tx_{unique} VALUES (1)")
        conn.execute(f"INSERT INTO tx_{unique} VALUES (1)")
    with psycopg.connect(postgres.dsn()) as conn:
        assert conn.execute(f"SELECT count(*) FROM tx_{unique}").fetchone() == (0,)


def test_password_is_required_and_private(postgres: Postgres) -> None:
    assert postgres.password_file.stat().st_mode & 0o077 == 0
    wrong = postgres.dsn().replace(postgres.password(), "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_server_listens_on_loopback_only(postgres: Postgres) -> None:
    with psycopg.connect(postgres.dsn()) as conn:
        row = conn.execute("SHOW listen_addresses").fetchone()
    assert row == ("127.0.0.1",)
