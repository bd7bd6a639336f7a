"""What a batcher process needs."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.genesis import Genesis
from ledger.keys import KeyPair
from runtime.topics import DEFAULT_PREFIX


def records_topic(prefix: str) -> str:
    """``<prefix>l2.records``."""
    return f"{prefix}l2.records"


def rejected_topic(prefix: str) -> str:
    """``<prefix>l2.rejected``."""
    return f"{prefix}l2.rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatcherConfig:
    """Everything a batcher process needs."""

    institution: str
    key: KeyPair
    chain_id: str
    genesis: Genesis  # the trust anchor of CommitBatch outcomes (decisions D22)
    bootstrap: str
    dsn: str  # the institution's database (chain projection + l2 tables)
    prefix: str = DEFAULT_PREFIX
    group: str = ""
    max_records: int = 5000
    window_ms: int = 1000
    verify_workers: int | None = None
    verify_processes: bool = False
    receipt_timeout: float = 60.0
    instance_id: str = ""  # static group membership: a restart takes its partitions back at once

    @property
    def consumer(self) -> str:
        """The consumer group, also the owner name of positions and batches."""
        return self.group or f"pantheon-batcher-{self.institution}"
