"""Versioned SQL migrations, applied automatically, idempotently and under a lock.

Theory of operation
-------------------
* A *namespace* (``chain``, ``runner``, ``iam``, ...) owns a directory of files named
  ``NNN_name.sql`` (``NNN`` a decimal version, ``name`` lowercase letters, digits and ``_``).
  Versions are unique per namespace and applied in increasing order.
* Every applied file is recorded in ``schema_migrations(namespace, version, name, checksum,
  applied_at)``; ``name`` is the file name without ``.sql`` (``001_chain``) and ``checksum``
  the SHA-256 (hex) of the file's bytes. A file whose version is recorded is never run
  again; if its bytes changed, :class:`MigrationError` is raised (an applied migration is
  history: write a new one instead).
* Each file runs in its own transaction together with its ``schema_migrations`` row, so a
  crash leaves it either applied and recorded or not at all.
* Concurrent callers (two processes starting at once) serialise on a session-level
  advisory lock derived from the namespace; the second one finds everything applied and
  returns an empty list. Callers of different namespaces (a gateway and a projector on one
  new database) create the shared ``schema_migrations`` table under one more lock, held
  until that creation commits (PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against
  a concurrent one).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger("pantheon.projections.migrate")

_FILE = re.compile(r"(?P<version>[0-9]+)_(?P<name>[a-z0-9_]+)\.sql")
_LOCK_SALT = "pantheon.schema_migrations:"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    namespace  text        NOT NULL,
    version    int         NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, version)
)
"""


class MigrationError(RuntimeError):
    """A migration directory is inconsistent, or an applied migration was edited."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One ``NNN_name.sql`` file."""

    version: int
    name: str
    checksum: str
    sql: str


def discover(directory: Path) -> list[Migration]:
    """The migrations of ``directory`` in version order; other files are ignored."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path.name}: version {version} appears twice in {directory}")
        raw = path.read_bytes()
        found[version] = Migration(
            version=version,
            name=path.stem,
            checksum=hashlib.sha256(raw).hexdigest(),
            sql=raw.decode("utf-8"),
        )
    return [found[v] for v in sorted(found)]


def apply_migrations(conn: psycopg.Connection[Any], namespace: str, directory: Path) -> list[str]:
    """Apply the migrations of ``directory`` not yet recorded for ``namespace``.

    Returns the names (file names without ``.sql``) applied by this call, empty if none.
    ``conn`` must not be inside a transaction; it is left outside one.
    """
    if not namespace:
        raise MigrationError("a migration namespace must not be empty")
    migrations = discover(directory)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_LOCK_SALT + namespace,))
    try:
        with conn.transaction():  # one table for every namespace: created under one lock
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK_SALT,))
            conn.execute(_CREATE_TABLE)
        return _apply_locked(conn, namespace, migrations)
    finally:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK_SALT + namespace,))


def _apply_locked(
    conn: psycopg.Connection[Any], namespace: str, migrations: list[Migration]
) -> list[str]:
    with conn.transaction():
        rows = conn.execute(
            "SELECT version, name, checksum FROM schema_migrations WHERE namespace = %s",
            (namespace,),
        ).fetchall()
    applied = {int(r[0]): (str(r[1]), str(r[2])) for r in rows}
    done: list[str] = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None:
            if recorded[1] != migration.checksum:
                raise MigrationError(
                    f"{namespace} migration {recorded[0]} was changed after it was applied "
                    f"(checksum {recorded[1][:12]} recorded, {migration.checksum[:12]} on disk)"
                )
            continue
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (namespace, version, name, checksum) "
                "VALUES (%s, %s, %s, %s)",
                (namespace, migration.version, migration.name, migration.checksum),
            )
        log.info("migration applied", extra={"namespace": namespace, "migration": migration.name})
        done.append(migration.name)
    return done
