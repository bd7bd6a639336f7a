"""Layer 2 end to end on the real broker, PostgreSQL and a real validator: device records through
the batcher process into CommitBatch transactions, every valid reading provable to a final
block, every bad message rejected with its reason; SIGKILL of the batcher mid-batch keeps it so.

``PANTHEON_L2_RECORDS`` sets the number of readings (default 100000 from 100 devices, the
issue's figure: about 30 s here, broker and database start included). Full proofs are built and
verified offline for a sample; every other reading is checked by recomputing its batch's root
from the stored leaves and comparing it with the root committed in a final block.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.consortium import new_key
from harness.l2_support import L2Stack, Workload, workload
from infra.postgres_server import Postgres
from ledger.proofs import verify_record_proof
from readers.proofs import proof_main, record_proof, verify_main

pytestmark = pytest.mark.integration

RECORDS = int(os.environ.get("PANTHEON_L2_RECORDS", "100000"))


@pytest.fixture
def stack(bootstrap: str, postgres: Postgres, tmp_path: Path) -> Iterator[L2Stack]:
    s = L2Stack(bootstrap, postgres.dsn("postgres"), tmp_path, devices=100)
    try:
        yield s
    finally:
        print(s.log_tail(80))
        s.close()


def _sample_proofs(stack: L2Stack, w: Workload, count: int) -> None:
    genesis = stack.consortium.genesis
    rng = random.Random(7)
    with stack.connect() as conn:
        for kid, seq in rng.sample(sorted(w.valid), count):
            proof = record_proof(conn, kid, seq)
            assert proof is not None, (kid.hex(), seq)
            ok = verify_record_proof(proof, genesis)
            assert (ok.device_key_id, ok.sequence) == (kid, seq)
        assert record_proof(conn, kid, 10**9) is None
        assert record_proof(conn, new_key().key_id, 0) is None


def test_records_anchored_exactly_once_with_sigkill(
    stack: L2Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = workload(
        stack.devices,
        RECORDS,
        bundle_devices=10,
        bundle_size=100,
        unknown=new_key(),
        revoked=stack.revoked,
    )
    half = len(w.messages) // 2
    stack.start_batcher("--max-records", "2000", "--window-ms", "300", "--instance-id", "b1", "-v")
    stack.send(w.messages[:half])
    # kill mid-batch: as soon as something is sealed and more is still unread or uncommitted
    deadline = time.monotonic() + 60
    while stack.counts()[1] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.counts()[1] > 0, stack.log_tail()
    stack.kill_batcher()
    killed_at = stack.counts()
    stack.send(w.messages[half:])
    stack.start_batcher("--max-records", "2000", "--window-ms", "300", "--instance-id", "b1", "-v")
    # and once more while it catches up
    time.sleep(1.0)
    stack.kill_batcher()
    stack.start_batcher("--max-records", "2000", "--window-ms", "300", "--instance-id", "b1", "-v")
    elapsed = stack.wait_done(w, timeout=180)
    assert stack.batcher_alive(), stack.log_tail()
    stack.check(w)
    _sample_proofs(stack, w, 40)

    # CLI: pantheon proof, then pantheon verify offline
    kid, seq = sorted(w.valid)[0]
    out = tmp_path / "proof.json"
    assert (
        proof_main(
            [
                "--dsn",
                stack.dsn_server,
                "--institution",
                "inst-1",
                "--dbname",
                stack.dbname,
                "--device",
                kid.hex(),
                "--sequence",
                str(seq),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert verify_main(["--genesis", str(stack.consortium.genesis_path), str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip())["valid"] is True
    doc = json.loads(out.read_text())
    doc["leaf"] = doc["leaf"][:-2] + ("00" if doc["leaf"][-2:] != "00" else "01")
    out.write_text(json.dumps(doc))
    assert verify_main(["--genesis", str(stack.consortium.genesis_path), str(out)]) == 1
    assert stack.stop_batcher() == 0
    print(
        f"l2: {len(w.valid)} readings in {len(w.messages)} messages; killed at {killed_at}; "
        f"done {elapsed:.1f}s after the last restart"
    )
