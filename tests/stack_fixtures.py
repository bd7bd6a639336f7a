"""Private stacks for tests: real servers on free loopback ports, in a temporary state dir.

Every server a test needs is started here, through the project's own infra code, and
stopped (and its files removed) when the test session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra import procs
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
def removed_afterwards(path: Path) -> Iterator[Path]:
    """Delete ``path`` when the block ends (servers must be stopped before)."""
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
