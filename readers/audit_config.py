"""What one audit run needs (:class:`AuditConfig`), and its one failure (:class:`AuditError`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streams.signature_pipeline import default_workers

if TYPE_CHECKING:
    pass


class AuditError(RuntimeError):
    """The audit could not run (configuration, broker, database)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditConfig:
    """Everything one audit run needs."""

    genesis: Path
    bootstrap: str
    prefix: str = "pantheon."
    institution: str | None = None
    dsn: str | None = None
    dbname: str | None = None
    at_height: int | None = None
    checkpoint: Path | None = None
    timeout: float = 30.0
    progress: bool = False
    workers: int | None = None  # signature workers: None = one per core, 0 or 1 = in-process

    @property
    def signature_workers(self) -> int:
        """Worker processes verifying signatures (0: the replay verifies them itself)."""
        workers = default_workers() if self.workers is None else self.workers
        return workers if workers > 1 else 0
