"""D62's idle check against the real PostgreSQL: the ticker reads the chain's clock as the
readers do (the running maximum of the header stamps, D56), not the last block's stamp.

The chain is written straight into ``chain.meta``/``chain.blocks``/``chain.keys`` (no
broker, no validators) and the producer is a stub that acknowledges what it is given: a
tick is a produce call. A chain whose last block is stamped before an earlier one still has
a block stamped after the time asked, so no tick is sent; a chain rebuilt under the ticker
(its height went down) is read again from the genesis.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from gateway.iam.clock_tick import ClockTicker
from infra.postgres_server import Postgres
from ledger.iam_events import SERVICE_ROLE
from ledger.keys import KeyPair
from projections import iam as iam_projection
from projections.projector import migrate as migrate_chain

pytestmark = pytest.mark.integration

INST = "inst-1"


@dataclass
class StubProducer:
    """Acknowledges every message at once (the broker is not what is tested here)."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)
    _pending: list[Callable[[Any, Any], None]] = field(default_factory=list)

    def produce(
        self, topic: str, *, key: bytes, value: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None:
        self.sent.append((topic, value))
        self._pending.append(on_delivery)

    def flush(self, timeout: float) -> int:
        for report in self._pending:
            report(None, object())
        self._pending.clear()
        return 0


@dataclass
class World:
    conn: psycopg.Connection[Any]
    ticker: ClockTicker
    producer: StubProducer
    key: KeyPair

    def blocks(self, *stamps: int) -> None:
        """Append certified blocks with these header stamps after the projected height."""
        row = self.conn.execute("SELECT height FROM chain.meta").fetchone()
        height = 0 if row is None else int(row[0])
        for stamp in stamps:
            height += 1
            self.conn.execute(
                "INSERT INTO chain.blocks (height, hash, prev_hash, first_offset, last_offset, "
                "tx_root, state_root, validator_set_hash, timestamp_ms, tx_count, ok_count, "
                "certificate, source_offset) "
                "VALUES (%s, %s, '', 0, 0, '', '', '', %s, 0, 0, '', 0)",
                (height, height.to_bytes(8, "big"), stamp),
            )
        self.conn.execute("UPDATE chain.meta SET height = %s", (height,))

    def tick(self, after_ms: int) -> bytes | None:
        return self.ticker.ensure_block_after(
            self.key, after_ms=after_ms, appended_ms=after_ms + 1, message=b"event"
        )


@pytest.fixture
def world(postgres: Postgres, unique: str) -> Iterator[World]:
    dbname = f"tick_{unique}"
    postgres.ensure_database(dbname)
    dsn = postgres.dsn(dbname)
    migrate_chain(dsn)
    key = KeyPair.from_seed(os.urandom(32))
    producer = StubProducer()
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn, min_size=1, max_size=2, open=True, kwargs={"autocommit": True}
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        iam_projection.migrate(conn)
        conn.execute(
            "INSERT INTO chain.meta (chain_id, genesis_hash, height, last_hash, state_root, "
            "last_tx_offset, tx_count, ok_count) VALUES ('chain-x', '', 0, '', '', 0, 0, 0)"
        )
        conn.execute(
            "INSERT INTO chain.keys (key_id, public_key, role, institution_id, label, active, "
            "next_nonce, updated_height) VALUES (%s, %s, %s, %s, 'iam', true, 0, 0)",
            (key.key_id, key.public_key, SERVICE_ROLE, INST),
        )
        ticker = ClockTicker(
            institution=INST,
            tx_topic="tx",
            pool=pool,
            producer=producer,  # type: ignore[arg-type]
            timeout_s=1.0,
        )
        try:
            yield World(conn=conn, ticker=ticker, producer=producer, key=key)
        finally:
            pool.close()


def test_no_tick_when_an_earlier_block_is_stamped_after_the_time(world: World) -> None:
    world.blocks(1_000, 5_000, 3_000)  # the last block stamped before the one before it
    assert world.tick(4_000) is None  # the readers decide h(4000): block 2 is after it
    assert world.producer.sent == []
    assert world.tick(5_000) is not None  # no block after 5000: the readers wait, so tick
    assert len(world.producer.sent) == 1


def test_the_stamps_are_read_again_after_the_chain_went_back(world: World) -> None:
    world.blocks(1_000, 9_000)
    assert world.tick(4_000) is None
    world.conn.execute("DELETE FROM chain.blocks")  # a rebuild under the ticker
    world.conn.execute("UPDATE chain.meta SET height = 0")
    world.blocks(2_000)
    assert world.tick(4_000) is not None  # 9000 belonged to the old tables
    world.blocks(3_000, 6_000, 5_000)
    assert world.tick(5_500) is None
