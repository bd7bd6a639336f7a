"""Start-up checks of the long-running processes (validator, projector, gateway, batcher).

Theory of operation
-------------------
A long-running process checks, before it starts its loops, what it cannot run without: that
the database accepts it and that a broker answers. Its institution is not checked against
the genesis: governance admits institutions after it, and their processes start before
the chain they follow says so. A failed check is a :class:`~runtime.cli_args.ConfigError`
whose message is one line (the process prints it as ``pantheon <process>: error: ...`` and
exits 2, decisions D36 and D49), instead of a traceback, a log line per connection
attempt, or waiting forever. Once running, losing the database or the broker stays what it
was: logged and retried.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ledger.errors import LedgerError
from ledger.genesis import Genesis
from runtime.cli_args import ConfigError, one_line
from runtime.kafka_config import admin_config

BROKER_TIMEOUT_S = 15.0
DATABASE_TIMEOUT_S = 10


def read_genesis(path: Path) -> Genesis:
    """The genesis document in ``path``; a ConfigError if it cannot be read or decoded."""
    try:
        return Genesis.decode(path.read_bytes())
    except (OSError, LedgerError) as exc:
        raise ConfigError(f"cannot read genesis {path}: {exc}") from exc


def require_broker(bootstrap: str, timeout: float = BROKER_TIMEOUT_S) -> None:
    """A broker of ``bootstrap`` answers within ``timeout`` (librdkafka quiet meanwhile)."""
    admin = AdminClient(admin_config(bootstrap, log_level=2))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConfigError(
            f"cannot reach Kafka at {bootstrap} within {timeout:.0f} s: {one_line(exc)}"
        ) from exc


def require_database(dsn: str) -> None:
    """The PostgreSQL server of ``dsn`` accepts a connection."""
    try:
        with psycopg.connect(dsn, connect_timeout=DATABASE_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ConfigError(f"cannot reach PostgreSQL: {one_line(exc)}") from exc


def refuse(program: str, exc: BaseException) -> int:
    """Print the one line of a failed start and return exit code 2."""
    print(f"pantheon {program}: error: {one_line(exc)}", file=sys.stderr, flush=True)
    return 2
