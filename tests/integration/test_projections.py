"""The chain projection against the real broker and PostgreSQL: equality with a replay of the
log through the core, bad input, rebuild, migrations, read-your-writes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from harness.projections_support import (
    SimChain,
    anchor,
    dump_all,
    expected_rows,
    governance_workload,
    projected_rows,
)
from infra.postgres_server import Postgres
from ledger.blocks import EntryResult, receipt
from ledger.results import ResultCode
from projections import read
from projections import runner as runner_module
from projections.chain import ChainProjection
from projections.migrate import MigrationError, apply_migrations
from projections.projector import CHAIN_MIGRATIONS, ProjectorConfig, ensure_database, prepare
from projections.rebuild import RebuildError, rebuild
from projections.runner import PositionConflict, ProjectionRunner, wait_for_offset

pytestmark = pytest.mark.integration


@pytest.fixture
def sim(bootstrap: str, tmp_path: Path) -> Iterator[SimChain]:
    chain = SimChain(bootstrap, f"p{uuid.uuid4().hex[:8]}.", tmp_path, max_block_txs=40)
    yield chain
    chain.close()


def config(sim: SimChain, postgres: Postgres, dbname: str) -> ProjectorConfig:
    return ProjectorConfig(
        institution="inst-1",
        genesis=sim.genesis_path,
        bootstrap=sim.bootstrap,
        prefix=sim.prefix,
        dsn=postgres.dsn("postgres"),
        dbname=dbname,
    )


def drain(runner: ProjectionRunner, projection: ChainProjection, height: int) -> None:
    for _ in range(600):
        runner.step(0.2)
        if projection.height >= height and not any(runner.lag().values()):
            return
    raise AssertionError(f"projection stuck at {projection.height}, wanted {height}")


def test_projection_equals_replay_and_rebuild(sim: SimChain, postgres: Postgres) -> None:
    raws, service = governance_workload(sim)
    sim.send(raws)
    sim.finalize()
    bulk = [anchor(sim, service, f"d-{i}") for i in range(3000)]
    sim.send(bulk)
    height = sim.finalize()
    # bad input on every topic: garbage, a forged block copy, a lying receipt
    sim.send([b"garbage", b"\xc3\x01" + bytes(40)], topic="blocks")
    lying = receipt(
        EntryResult(tx_id=bytes(32), offset=0, code=ResultCode.OK), height=1, block_hash=bytes(32)
    )
    sim.send([b"garbage", lying], topic="receipts")

    cfg = config(sim, postgres, f"t_{uuid.uuid4().hex[:10]}")
    projection, runner = prepare(cfg)
    try:
        drain(runner, projection, height)
    finally:
        runner.close()
    assert projection.height == height
    assert projection.counters["blocks_malformed"] == 2
    assert projection.counters["receipts_malformed"] == 1
    assert projection.counters["receipts_mismatch"] == 1  # the lying one, nothing else
    assert projection.counters["receipts_verified"] > 0
    dsn = runner.dsn
    assert projected_rows(dsn) == expected_rows(sim.replay())
    with psycopg.connect(dsn) as conn:
        owners = conn.execute(
            "SELECT owner_key_id FROM chain.asset_owners ORDER BY height, position"
        ).fetchall()
        assert len(owners) == 3
        votes = conn.execute(
            "SELECT institution_id, approve FROM chain.proposal_votes ORDER BY institution_id"
        ).fetchall()
        assert votes == [("inst-1", True), ("inst-2", True), ("inst-3", False)]
        assert conn.execute("SELECT count(*) FROM chain.pending_blocks").fetchone() == (0,)

        _check_read_api(conn, height, service.key_id)

    incremental = dump_all(dsn)
    result = rebuild(cfg)
    assert result.height == height
    assert dump_all(dsn) == incremental


CHAIN_NAMES = [
    "001_chain",
    "002_drop_pending_tx",
    "003_key_activity",
    "004_transactions_operation",
]


def test_migrations_twice_change_nothing(postgres: Postgres) -> None:
    dsn = ensure_database(postgres.dsn("postgres"), f"t_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = apply_migrations(conn, "chain", CHAIN_MIGRATIONS)
        schema = _schema(conn)
        assert first == CHAIN_NAMES
        assert apply_migrations(conn, "chain", CHAIN_MIGRATIONS) == []
        assert _schema(conn) == schema
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE namespace = 'chain'")
        with pytest.raises(MigrationError):
            apply_migrations(conn, "chain", CHAIN_MIGRATIONS)


def test_concurrent_migrations(postgres: Postgres) -> None:
    dsn = ensure_database(postgres.dsn("postgres"), f"t_{uuid.uuid4().hex[:10]}")
    results: list[list[str]] = []

    def one() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            results.append(apply_migrations(conn, "chain", CHAIN_MIGRATIONS))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], [], [], CHAIN_NAMES]  # exactly one thread applied them


def test_namespaces_migrating_at_once_on_a_fresh_database(
    postgres: Postgres, tmp_path: Path
) -> None:
    """A gateway and a projector start together on one new database, each migrating its
    own namespace: the shared ``schema_migrations`` table is created once, not raced (a
    plain CREATE TABLE IF NOT EXISTS from both failed on pg_type's unique index)."""
    for n in range(8):
        (tmp_path / f"ns{n}").mkdir()
        (tmp_path / f"ns{n}" / "001_t.sql").write_text(f"CREATE TABLE t{n} (x int);")
    for _ in range(5):
        dsn = ensure_database(postgres.dsn("postgres"), f"t_{uuid.uuid4().hex[:10]}")
        assert _migrate_at_once(dsn, tmp_path, 8) == []


def _migrate_at_once(dsn: str, root: Path, count: int) -> list[BaseException]:
    """``count`` connections each apply namespace ``ns<n>`` (from ``root/ns<n>``) at once;
    what any of them raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def one(n: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                start.wait()
                assert apply_migrations(conn, f"ns{n}", root / f"ns{n}") == ["001_t"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _schema(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema IN ('chain', 'public') ORDER BY 1, 2, 3"
    ).fetchall()


def test_read_your_writes_and_single_runner(sim: SimChain, postgres: Postgres) -> None:
    raws, service = governance_workload(sim)
    sim.send(raws + [anchor(sim, service, f"r-{i}") for i in range(100)])
    height = sim.finalize()
    cfg = config(sim, postgres, f"t_{uuid.uuid4().hex[:10]}")
    projection, runner = prepare(cfg)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        blocks_end = height * sim.copies  # one message per copy of each block
        assert wait_for_offset(runner.dsn, "chain", sim.topic("blocks"), 0, blocks_end - 1, 30)
        assert projection.height == height
        with pytest.raises(RebuildError):
            rebuild(cfg)
    finally:
        stop.set()
        thread.join(30)
    assert not wait_for_offset(runner.dsn, "chain", sim.topic("blocks"), 0, blocks_end, 0.3)


def test_a_runner_whose_positions_moved_commits_nothing(sim: SimChain, postgres: Postgres) -> None:
    """Positions move only from the values the runner read: if anything else moved them (a
    second writer that bypassed the lock), the batch rolls back with PositionConflict."""
    signer = sim.gov("inst-1")
    sim.send([anchor(sim, signer, f"s-{i}") for i in range(3)])
    height = sim.finalize()
    cfg = config(sim, postgres, f"t_{uuid.uuid4().hex[:10]}")
    projection, runner = prepare(cfg)
    try:
        drain(runner, projection, height)
        with psycopg.connect(runner.dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE projection_positions SET next_offset = next_offset - 1 "
                "WHERE projection = 'chain' AND topic = %s",
                (sim.topic("tx"),),
            )
            before = dump_all(runner.dsn)
            sim.send([anchor(sim, signer, "s-late")])
            sim.finalize()
            with pytest.raises(PositionConflict):
                for _ in range(50):
                    runner.step(0.2)
            assert dump_all(runner.dsn) == before
    finally:
        runner.close()


def _check_read_api(conn: psycopg.Connection[Any], height: int, service: bytes) -> None:
    top = read.latest_blocks(conn, limit=5)
    assert [b.height for b in top] == list(range(height, height - 5, -1))
    page2 = read.latest_blocks(conn, limit=5, before_height=top[-1].height)
    assert page2[0].height == height - 5
    assert read.block_by_hash(conn, top[0].hash) == top[0] == read.block_by_height(conn, height)
    summary = read.summary(conn)
    assert summary is not None and summary.height == height and summary.tx_count > 3000
    first = read.transactions_by_sender(conn, service, limit=10)
    second = read.transactions_by_sender(
        conn, service, limit=10, before=(first[-1].height, first[-1].position)
    )
    assert len(first) == len(second) == 10 and first[-1].tx_offset > second[0].tx_offset
    assert read.transactions_by_id(conn, first[0].tx_id) == [first[0]]
    in_block = read.transactions_by_block(conn, first[0].height)
    assert first[0] in in_block
    insts = read.institutions(conn)
    assert len(insts) == 4 and len(insts[1].operators) == 2
    props = read.proposals(conn)
    assert len(props) == 1 and len(props[0].votes) == 3
    assert [d.label for d in read.devices(conn, "inst-1")] == ["sensor-1"]
    assert read.anchor(conn, "d-1") is not None
    assert len(read.anchors(conn, "inst-1", limit=7)) == 7
    asset = read.asset(conn, "asset-1")
    assert asset is not None and len(asset.history) == 3
    assert asset.owner_key_id == asset.history[-1].owner_key_id
    assert read.assets_of(conn, asset.owner_key_id) == ["asset-1"]
    assert [b.batch_id for b in read.l2_batches(conn)] == ["b-1"]


def test_transactions_without_a_block_are_held_not_committed(
    sim: SimChain, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trickle of transactions costs no transaction of its own: the runner holds it until
    a block message comes (or MAX_HOLD_SECONDS pass), and only then commits it with the
    positions. Transactions not yet in a block are not stored at all: a restarted projector
    re-reads them from the first one after its last block (D20)."""
    signer = sim.gov("inst-1")
    cfg = config(sim, postgres, f"t_{uuid.uuid4().hex[:10]}")
    projection, runner = prepare(cfg)
    tx_topic = (sim.topic("tx"), 0)
    try:
        sim.send([anchor(sim, signer, f"h-{i}") for i in range(5)])
        for _ in range(5):
            runner.step(0.2)
        assert runner.positions()[tx_topic] == 0
        monkeypatch.setattr(runner_module, "MAX_HOLD_SECONDS", 0.0)
        runner.step(0.2)
        assert runner.positions()[tx_topic] == 5
        monkeypatch.undo()
    finally:
        runner.close()
    projection, runner = prepare(cfg)  # a restart: nothing of the 5 is in the database
    try:
        height = sim.finalize()
        drain(runner, projection, height)
        assert runner.positions()[tx_topic] == 6  # the 5 and the block's marker
    finally:
        runner.close()
    assert projection.height == height >= 1
    with psycopg.connect(runner.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM chain.transactions").fetchone() == (5,)


def test_positions_are_mirrored_as_advisory_kafka_offsets(
    sim: SimChain, postgres: Postgres
) -> None:
    """Kafka's own lag tools see the projector's progress: the stored positions are committed
    as the group's offsets (advisory; nothing reads them back)."""
    raws, service = governance_workload(sim)
    sim.send(raws + [anchor(sim, service, f"k-{i}") for i in range(50)])
    height = sim.finalize()
    cfg = config(sim, postgres, f"t_{uuid.uuid4().hex[:10]}")
    projection, runner = prepare(cfg)
    assert runner.group == "projection-inst-1-chain"
    admin = AdminClient({"bootstrap.servers": sim.bootstrap})
    try:
        drain(runner, projection, height)
        positions = runner.positions()
        assert positions[(sim.topic("blocks"), 0)] > 0
        committed: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + 30
        while committed != positions and time.monotonic() < deadline:
            runner.step(0.2)
            runner._advise(force=True)
            request = ConsumerGroupTopicPartitions(
                runner.group, [TopicPartition(t, p) for t, p in positions]
            )
            result = admin.list_consumer_group_offsets([request])[runner.group].result(10)
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in result.topic_partitions
                if tp.offset >= 0
            }
        assert committed == positions
    finally:
        runner.close()
