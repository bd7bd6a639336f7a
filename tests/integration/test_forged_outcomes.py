"""Issue 17's receipt attack against real validators, the real broker and PostgreSQL.

An attacker who can produce to Kafka (:class:`tests.outcome_helpers.Forger`) answers every
transaction at once with a forged ``Receipt`` (height 1,000,000, a random block hash,
FORBIDDEN) and a forged ``FinalizedBlock`` copy of the next height (the genesis validator set
named, the attacker's signatures), and adds an impostor vote and a non-member vote. The SDK
and the gateway's data proxy act on the certified outcome only; the forgeries are counted;
``pantheon audit`` reports the forged receipts as errors and the forged votes as findings.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from starlette.testclient import TestClient

from gateway.app import GatewayConfig, create_app
from gateway.context import Services
from gateway.governance import Governance
from gateway.objects import DataProxy, ProxyConfig
from harness.consortium import Consortium
from harness.gateway_support import Tokens
from infra.postgres_server import Postgres
from ledger.hashing import sha256
from ledger.results import ResultCode
from projections.projector import ProjectorConfig, prepare
from readers import audit
from streams.sdk import LedgerClient
from tests.integration.test_data_proxy import ObjectServices
from tests.outcome_helpers import Forger

pytestmark = pytest.mark.integration

INST = "inst-1"


@dataclass
class Net:
    consortium: Consortium
    pool: ConnectionPool[Any]
    dsn: str
    tokens: Tokens
    governance: Governance
    proxy: DataProxy

    def app(self) -> Any:
        services = Services(institution=INST, pool=self.pool)
        return create_app(
            GatewayConfig(institution=INST, cache_responses=False, poll_interval_s=0.05),
            services,
            self.tokens.verifier,
            governance=self.governance,
            objects=self.proxy,
        )

    def forger(self) -> Forger:
        c = self.consortium
        return Forger(c.bootstrap, c.prefix, c.genesis, c.operator_key("inst-2"))


@pytest.fixture(scope="module")
def net(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Net]:
    workdir = tmp_path_factory.mktemp("forged")
    consortium = Consortium(bootstrap, workdir / "c", 3, block_interval_ms=100)
    stop = threading.Event()
    runner: Any = None
    thread: threading.Thread | None = None
    try:
        consortium.start_all()
        cfg = ProjectorConfig(
            institution=INST,
            genesis=consortium.genesis_path,
            bootstrap=bootstrap,
            prefix=consortium.prefix,
            dsn=postgres.dsn("postgres"),
            dbname=f"forged_{uuid.uuid4().hex[:10]}",
        )
        _projection, runner = prepare(cfg)
        thread = threading.Thread(
            target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05}, daemon=True
        )
        thread.start()
        pool: ConnectionPool[Any] = ConnectionPool(
            runner.dsn, min_size=1, max_size=8, open=True, kwargs={"autocommit": True}
        )
        services = ObjectServices.start(consortium, pool, runner.dsn, workdir, ProxyConfig())
        consortium.wait_ready(consortium.institutions)
        yield Net(consortium, pool, runner.dsn, Tokens(), services.governance, services.proxy)
        services.close()
        pool.close()
    finally:
        stop.set()
        if thread is not None:
            thread.join(30)
        if runner is not None:
            runner.close()
        consortium.close()


def _first_receipt_is_forged(c: Consortium, tx_id: bytes) -> None:
    """The attack happened in the harmful order: the receipts topic's first receipt of
    ``tx_id`` is the forged one (what the old first-receipt-wins SDK returned)."""
    first = next(record for key, _, record in c.read_receipts() if record["tx_id"] == tx_id)
    assert (first["height"], first["result_code"]) == (1_000_000, int(ResultCode.FORBIDDEN))


def test_submit_and_wait_returns_the_certified_outcome(net: Net) -> None:
    c = net.consortium
    gov = c.gov_key("inst-3")  # used by nothing else in this module
    args = {"data_id": f"sdk-{uuid.uuid4().hex[:8]}", "sha256": bytes(32), "metadata": "{}"}
    with (
        net.forger() as forger,
        LedgerClient(
            c.bootstrap, gov, c.chain_id, prefix=c.prefix, genesis=c.genesis, check_receipts=True
        ) as client,
    ):
        got = client.submit_and_wait("AnchorData", args, timeout=30)
        watcher = client.watcher
        assert watcher is not None
        deadline = time.monotonic() + 10
        while watcher.counts()["forged_receipts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = watcher.counts()
    assert got.code is ResultCode.OK, got
    assert got.height < 1_000_000
    replayed = {b.header.height: b for b in c.replay().blocks}
    block = replayed[got.height]
    assert got.block_hash == block.block_hash
    assert any(r.tx_id == got.tx_id and r.offset == got.offset for r in block.results)
    assert [f.tx_id for f in forger.forged] == [got.tx_id]
    _first_receipt_is_forged(c, got.tx_id)
    assert counts["forged"] >= 1, counts  # the forged FinalizedBlock copy was refused
    assert counts["forged_receipts"] == 1, counts


def test_put_object_is_kept_despite_a_forged_receipt(net: Net) -> None:
    writer = net.tokens.token(("data:write", "data:read"), sub="alice", groups=[])
    data_id = f"x-{uuid.uuid4().hex[:8]}"
    body = b"anchored despite the attacker " * 100
    with net.forger() as forger, TestClient(net.app()) as gw:
        r = gw.put(
            f"/objects/{data_id}", content=body, headers={"Authorization": f"Bearer {writer}"}
        )
        assert r.status_code == 201, r.text
        anchored = r.json()
        assert anchored["height"] < 1_000_000
        got = gw.get(f"/objects/{data_id}", headers={"Authorization": f"Bearer {writer}"})
        assert got.status_code == 200 and got.content == body
    assert len(forger.forged) == 1
    tx_id = forger.forged[0].tx_id
    assert anchored["tx_id"] == tx_id.hex()
    _first_receipt_is_forged(net.consortium, tx_id)
    with psycopg.connect(net.dsn) as conn:
        row = conn.execute(
            "SELECT status, tx_id FROM objects.uploads WHERE data_id = %s", (data_id,)
        ).fetchone()
        anchor = conn.execute(
            "SELECT sha256 FROM chain.anchors WHERE data_id = %s", (data_id,)
        ).fetchone()
    assert row is not None and row[0] == "anchored" and bytes(row[1]) == tx_id
    assert anchor is not None and bytes(anchor[0]) == sha256(body)


def test_audit_reports_forged_receipts_and_votes(net: Net, tmp_path: Path) -> None:
    c = net.consortium
    gov = c.gov_key("inst-2")
    with net.forger() as forger:
        for i in range(2):
            c.send([c.anchor(gov, f"audit-{uuid.uuid4().hex[:6]}-{i}")], key=gov.key_id)
        deadline = time.monotonic() + 20
        while (len(forger.forged) < 2 or not forger.vote_height) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(forger.forged) == 2 and forger.vote_height
    forged_offsets = {f.tx_offset for f in forger.forged}
    c.wait_final(max(b.header.height for b in c.replay().blocks))
    out = tmp_path / "audit.json"
    code = audit.main(
        [
            "--genesis",
            str(c.genesis_path),
            "--bootstrap",
            c.bootstrap,
            "--prefix",
            c.prefix,
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    report = json.loads(out.read_text())
    assert code == 1
    findings = report["findings"]
    mismatched = [f for f in findings if f["kind"] == "receipt.mismatch"]
    assert all(f["severity"] == "error" for f in mismatched)
    assert {f["details"]["receipt"]["offset"] for f in mismatched} >= forged_offsets
    assert {f["height"] for f in mismatched} == {1_000_000}
    impostor = [f for f in findings if f["kind"] == "vote.impostor"]
    assert impostor and impostor[0]["severity"] == "error"
    assert impostor[0]["details"]["institution"] == "inst-2"
    assert any(f["kind"] == "vote.non_member" for f in findings)
    forged_blocks = [f for f in findings if f["kind"] in ("block.forged", "block.beyond_log")]
    assert forged_blocks, findings
    assert not [f for f in findings if f["kind"] == "receipt.pending"]
