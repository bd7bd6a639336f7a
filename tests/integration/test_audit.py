"""``pantheon audit`` against the real broker and PostgreSQL: an untouched system audits clean;
a changed byte in a projected row, a deleted row and a forged block on the blocks topic are each
reported precisely, with a non-zero exit; so is a changed Layer-2 leaf; time travel. Signature
workers (``--workers``) change nothing in the findings, even when a quorum certified a block
that accepted a bad signature."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from harness.consortium import read_partition
from harness.projections_support import SimChain, anchor, governance_workload
from infra.postgres_server import Postgres
from ledger.blocks import decode_finalized, encode_finalized
from ledger.cutter import CutBlock
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.merkle import root
from projections.migrate import apply_migrations
from projections.projector import ProjectorConfig, prepare
from readers import audit

pytestmark = pytest.mark.integration
L2_MIGRATIONS = Path(__file__).resolve().parents[2] / "projections" / "migrations" / "l2"


@dataclass
class Projected:
    sim: SimChain
    server_dsn: str
    dbname: str
    dsn: str
    height: int
    institution: str


@pytest.fixture(scope="module")
def projected(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Projected]:
    sim = SimChain(
        bootstrap, f"a{uuid.uuid4().hex[:8]}.", tmp_path_factory.mktemp("audit"), max_block_txs=40
    )
    raws, service = governance_workload(sim)
    sim.send(raws)
    sim.finalize()
    sim.send([anchor(sim, service, f"d-{i}") for i in range(400)])
    height = sim.finalize()
    yield _project(sim, postgres, "inst-1", height)
    sim.close()


def _project(sim: SimChain, postgres: Postgres, institution: str, height: int) -> Projected:
    dbname = f"audit_{uuid.uuid4().hex[:10]}"
    config = ProjectorConfig(
        institution=institution,
        genesis=sim.genesis_path,
        bootstrap=sim.bootstrap,
        prefix=sim.prefix,
        dsn=postgres.dsn("postgres"),
        dbname=dbname,
    )
    projection, runner = prepare(config)
    try:
        for _ in range(600):
            runner.step(0.2)
            if projection.height >= height and not any(runner.lag().values()):
                break
        assert projection.height == height
    finally:
        runner.close()
    return Projected(sim, postgres.dsn("postgres"), dbname, runner.dsn, height, institution)


def run(p: Projected, tmp_path: Path, *extra: str, projection: bool = True) -> tuple[int, Any]:
    out = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    argv = [
        "--genesis",
        str(p.sim.genesis_path),
        "--bootstrap",
        p.sim.bootstrap,
        "--prefix",
        p.sim.prefix,
        "--json",
        str(out),
        "--no-progress",
        *extra,
    ]
    if projection:
        argv += ["--institution", p.institution, "--dsn", p.server_dsn, "--dbname", p.dbname]
    code = audit.main(argv)
    return code, json.loads(out.read_text())


def errors(report: Any) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["severity"] == "error"]


def test_clean_then_tampered(
    projected: Projected, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = projected
    code, report = run(p, tmp_path)
    text = capsys.readouterr().out
    assert code == 0, text
    assert report["result"] == "clean" and errors(report) == []
    assert report["audited_height"] == p.height == report["projection"]["projected_height"]
    assert all(t["equal"] for t in report["projection"]["tables"])
    assert {t["table"] for t in report["projection"]["tables"]} >= {
        "blocks",
        "transactions",
        "anchors",
        "keys",
        "state_records",
        "meta",
    }
    assert report["result_codes"]["OK"] > 400
    assert "RESULT: CLEAN" in text
    skipped = {f["kind"] for f in report["findings"] if f["severity"] == "info"}
    assert {"l2.not_checked", "anchors.not_checked"} <= skipped

    # 1. one byte of one projected row, 2. one deleted row, 3. a forged block on the topic
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE chain.transactions SET envelope = set_byte(envelope, 20, "
            "get_byte(envelope, 20) # 1) WHERE height = 2 AND position = 0"
        )
        conn.execute("DELETE FROM chain.anchors WHERE data_id = 'd-7'")
    blocks = read_partition(p.sim.bootstrap, p.sim.topic("blocks"))
    header, cert, results = decode_finalized(blocks[-1].value)
    forged = encode_finalized(replace(header, timestamp_ms=header.timestamp_ms + 1), cert, results)
    p.sim.send([forged], topic="blocks")
    forged_offset = blocks[-1].offset + 1

    code, report = run(p, tmp_path)
    text = capsys.readouterr().out
    assert code == 1, text
    found = {f["kind"]: f for f in errors(report)}
    assert sorted(found) == ["block.forged", "row.differs", "row.missing"], text
    changed = found["row.differs"]["details"]
    assert changed["table"] == "transactions" and changed["key"] == {"height": 2, "position": 0}
    assert list(changed["columns"]) == ["envelope"]
    assert changed["columns"]["envelope"]["first_differing_byte"] == 20
    missing = found["row.missing"]["details"]
    assert missing["table"] == "anchors" and missing["key"] == {"data_id": "d-7"}
    block = found["block.forged"]
    assert block["offset"] == forged_offset and block["height"] == header.height
    assert list(block["details"]["differs_from_replay"]) == ["timestamp_ms"]
    tables = {t["table"]: t for t in report["projection"]["tables"]}
    assert not tables["transactions"]["equal"] and not tables["anchors"]["equal"]
    assert tables["anchors"]["actual_rows"] == tables["anchors"]["expected_rows"] - 1
    assert tables["blocks"]["equal"] and tables["keys"]["equal"]
    assert "RESULT: 3 DISCREPANCIES" in text


def test_time_travel(projected: Projected, tmp_path: Path) -> None:
    code, report = run(projected, tmp_path, "--at-height", "2", projection=False)
    at = report["at_height"]
    assert at["height"] == 2 and at["certified"]
    assert report["replayed_height"] == 2
    expected = projected.sim.replay().block(2)
    assert at["block_hash"] == expected.block_hash.hex()
    assert at["records_by_kind"]["inst"] == 4
    assert code in (0, 1)  # the forged copy of the other test may be on the log


def test_unreachable_projection_is_a_usage_error(projected: Projected, tmp_path: Path) -> None:
    argv = [
        "--genesis",
        str(projected.sim.genesis_path),
        "--bootstrap",
        projected.sim.bootstrap,
        "--prefix",
        projected.sim.prefix,
        "--institution",
        "inst-1",
        "--dsn",
        projected.server_dsn,
        "--dbname",
        "no_such_db",
        "--no-progress",
    ]
    assert audit.main(argv) == 2


@pytest.fixture(scope="module")
def with_l2(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Projected]:
    """inst-2's database with a committed batch and its leaves in the batcher's store."""
    sim = SimChain(bootstrap, f"l{uuid.uuid4().hex[:8]}.", tmp_path_factory.mktemp("l2"))
    gov = sim.gov("inst-2")
    leaves = [f"reading-{i}".encode() for i in range(7)]
    merkle_root = root(leaves)
    sim.send(
        [
            sim.tx(
                gov,
                "CommitBatch",
                {
                    "batch_id": "L-1",
                    "merkle_root": merkle_root,
                    "leaf_count": 7,
                    "window_start_ms": 1,
                    "window_end_ms": 2,
                },
            ),
            anchor(sim, gov, "x-1"),
        ]
    )
    p = _project(sim, postgres, "inst-2", sim.finalize())
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        apply_migrations(conn, "l2", L2_MIGRATIONS)
        conn.execute(
            "INSERT INTO l2.batches (batch_id, consumer, topic, partition, first_offset, "
            "last_offset, merkle_root, leaf_count, record_count, window_start_ms, "
            "window_end_ms, state) VALUES ('L-1', 'c', 't', 0, 0, 6, %s, 7, 7, 1, 2, "
            "'committed')",
            (merkle_root,),
        )
        for i, leaf in enumerate(leaves):
            conn.execute(
                "INSERT INTO l2.leaves (batch_id, leaf_index, device_key_id, "
                "first_sequence, last_sequence, kind, leaf) "
                "VALUES ('L-1', %s, %s, %s, %s, 0, %s)",
                (i, bytes(32), i, i, leaf),
            )
    yield p
    sim.close()


def test_tampered_l2_leaf_is_reported(with_l2: Projected, tmp_path: Path) -> None:
    code, report = run(with_l2, tmp_path)
    assert code == 0 and errors(report) == [], report["findings"]
    notices = {f["kind"] for f in report["findings"]}
    assert "l2.not_checked" not in notices and "anchors.not_checked" in notices
    with psycopg.connect(with_l2.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE l2.leaves SET leaf = set_byte(leaf, 3, get_byte(leaf, 3) # 1) "
            "WHERE batch_id = 'L-1' AND leaf_index = 4"
        )
    code, report = run(with_l2, tmp_path)
    assert code == 1
    [finding] = errors(report)
    assert finding["kind"] == "l2.root_mismatch" and "'L-1'" in finding["message"]
    committed = root([f"reading-{i}".encode() for i in range(7)])
    assert finding["details"]["committed"] == committed.hex()


# A tampered off-chain object (anchor.object_mismatch) is tested with the real data access
# proxy in tests/integration/test_data_proxy.py::test_audit_checks_the_object_store.


# -- signature workers ----------------------------------------------------------------------------
def _broken(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


@pytest.fixture(scope="module")
def lenient(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimChain]:
    """A chain whose validators rejected a bad signature once (BAD_SIGNATURE in a certified
    block: clean), then, in the last block, certified one as accepted (a discrepancy)."""
    sim = SimChain(
        bootstrap, f"w{uuid.uuid4().hex[:8]}.", tmp_path_factory.mktemp("workers"), max_block_txs=40
    )
    raws, service = governance_workload(sim)
    sim.send(raws)
    sim.finalize()
    sim.send([anchor(sim, service, f"d-{i}") for i in range(300)])
    bad = _broken(anchor(sim, service, "bad-1"))
    sim.nonces[service.key_id] -= 1
    sim.send([bad, b"garbage", anchor(sim, service, "after-1")])
    sim.finalize()
    forged = _broken(anchor(sim, service, "bad-2"))
    machine = sim.machine

    def lenient(block: CutBlock, **_: object) -> ExecutedBlock:
        return LedgerMachine.execute(machine, block, verified_signatures={forged})

    machine.execute = lenient  # type: ignore[method-assign]
    sim.send([forged, anchor(sim, service, "after-2")])
    sim.finalize()
    yield sim
    sim.close()


def test_workers_report_what_the_in_process_audit_reports(
    lenient: SimChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports: dict[str, Any] = {}
    for workers in ("0", "2"):
        out = tmp_path / f"report-{workers}.json"
        argv = [
            "--genesis",
            str(lenient.genesis_path),
            "--bootstrap",
            lenient.bootstrap,
            "--prefix",
            lenient.prefix,
            "--json",
            str(out),
            "--no-progress",
            "--workers",
            workers,
        ]
        assert audit.main(argv) == 1
        reports[workers] = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "signatures verified by 2 worker processes" in text
    alone, parallel = reports["0"], reports["2"]
    assert (alone["signature_workers"], parallel["signature_workers"]) == (0, 2)
    for key in (
        "findings",
        "findings_not_listed",
        "summary",
        "result_codes",
        "counts",
        "logs",
        "replayed_height",
        "audited_height",
        "membership",
    ):
        assert parallel[key] == alone[key], key
    codes = parallel["result_codes"]
    assert codes["BAD_SIGNATURE"] == 2 and codes["MALFORMED"] >= 2 and codes["OK"] > 300
    height = lenient.machine.height
    found = errors(parallel)  # both copies of the last block, both receipts of both its entries
    assert sorted(f["kind"] for f in found) == ["block.mismatch"] * 2 + ["receipt.mismatch"] * 4
    assert {f["height"] for f in found} == {height}
    assert {"tx_root", "state_root"} <= set(found[0]["details"])
    assert parallel["audited_height"] == height - 1


def test_workers_option_is_checked(lenient: SimChain) -> None:
    argv = [
        "--genesis",
        str(lenient.genesis_path),
        "--bootstrap",
        lenient.bootstrap,
        "--prefix",
        lenient.prefix,
        "--no-progress",
        "--workers",
        "-1",
    ]
    assert audit.main(argv) == 2
