"""Private stacks for tests: real servers on free loopback ports, in a temporary state dir.

Every server a test needs is started here, through the project's own infra code, and
stopped (and its files removed) when the test session ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from infra import procs
from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from infra.settings import Settings


def temp_state_dir(prefix: str = "pantheon-test-") -> Path:
    """A fresh state directory that a service account (PostgreSQL as root) may enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("PANTHEON_TEST_TMP", "/tmp")))
    path.chmod(0o755)
    return path


def private_settings(*, brokers: int = 1, state_dir: Path | None = None) -> Settings:
    """Settings of a stack no one else uses: own state dir and free ports."""
    base = Settings.from_env()
    return base.with_changes(
        state_dir=state_dir or temp_state_dir(),
        kafka_brokers=brokers,
        kafka_port=procs.free_port_block(2 * brokers),
        pg_port=procs.free_port(),
        prom_port=procs.free_port(),
        gateway_port=procs.free_port_block(8),
        topic_prefix="pantheon.",
    )


@contextmanager
def private_servers(
    work_prefix: str, *, postgres_options: Sequence[str] = ()
) -> Iterator[tuple[Settings, KafkaCluster, Postgres, Path]]:
    """A private Kafka and PostgreSQL (``postgres_options``: extra server settings), started,
    and a work directory; both servers stopped and every file removed when the block ends."""
    settings = private_settings()
    kafka, postgres = KafkaCluster(settings), Postgres(settings, server_options=postgres_options)
    work = Path(tempfile.mkdtemp(prefix=work_prefix))
    try:
        kafka.start()
        postgres.start()
        yield settings, kafka, postgres, work
    finally:
        postgres.stop()
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def stack_variables(settings: Settings) -> dict[str, str]:
    """The ``PANTHEON_*`` variables that make ``pantheon up`` start the stack of ``settings``
    (later commands find it from ``PANTHEON_STATE_DIR`` alone: D36)."""
    return {
        "PANTHEON_STATE_DIR": str(settings.state_dir),
        "PANTHEON_KAFKA_PORT": str(settings.kafka_port),
        "PANTHEON_PG_PORT": str(settings.pg_port),
        "PANTHEON_PROM_PORT": str(settings.prom_port),
        "PANTHEON_GATEWAY_PORT": str(settings.gateway_port),
    }


@contextmanager
def removed_afterwards(path: Path) -> Iterator[Path]:
    """Delete ``path`` when the block ends (servers must be stopped before)."""
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def stack_secrets(state_dir: Path) -> dict[str, str]:
    """Every secret a stack keeps under ``state_dir``: the database password, each key
    file's seeds (hex), each IAM master key (as stored): ``{secret: where it is from}``."""
    found: dict[str, str] = {}
    password = state_dir / "postgres" / "password"
    if password.exists():
        found[password.read_text().strip()] = str(password)

    def seeds(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("seed", "secret", "private_key") and isinstance(value, str):
                    found[value] = where
                seeds(value, where)
        elif isinstance(node, list):
            for value in node:
                seeds(value, where)

    for path in sorted(state_dir.rglob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            seeds(json.loads(path.read_text()), str(path))
    for path in sorted(state_dir.rglob("master.key")):
        found[path.read_text().strip()] = str(path)
    return {secret: where for secret, where in found.items() if len(secret) >= 16}


def command_lines_carrying(secrets: dict[str, str]) -> dict[int, str]:
    """``{pid: why}`` of every process on this machine whose command line holds one of
    ``secrets`` (any local user can read a command line in /proc)."""
    leaks: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        for secret, where in secrets.items():
            if secret in argv or secret.lower() in argv.lower():
                leaks[int(entry.name)] = f"{argv.replace(chr(0), ' ')[:200]} (from {where})"
    return leaks
