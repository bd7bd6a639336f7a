"""SIGKILL the projector process again and again while blocks keep coming; afterwards no row
is missing or duplicated: the tables equal the core's replay and a clean projection."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from harness.projections_support import (
    SimChain,
    anchor,
    dump_all,
    expected_rows,
    governance_workload,
    projected_rows,
    projector_argv,
)
from infra.postgres_server import Postgres
from projections.projector import ProjectorConfig, prepare

pytestmark = [pytest.mark.integration, pytest.mark.faults]
REPO = Path(__file__).resolve().parents[2]


def _start(argv: list[str], log: Path, secret_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **secret_env}
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=out, cwd=REPO, env=env, start_new_session=True
        )


def _height(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute("SELECT height FROM chain.meta").fetchone()
            return int(row[0]) if row else -1
    except psycopg.Error:
        return -1


def _handles_sigterm(pid: int) -> bool:
    """Whether ``pid`` has installed its SIGTERM handler (a process still importing has not:
    SIGTERM would kill it rather than stop it)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def test_sigkill_during_load_loses_and_duplicates_nothing(
    bootstrap: str, postgres: Postgres, tmp_path: Path
) -> None:
    sim = SimChain(bootstrap, f"k{uuid.uuid4().hex[:8]}.", tmp_path, max_block_txs=25)
    sim.forge_every = 7  # a copy with a broken signature precedes some real ones
    raws, service = governance_workload(sim)
    sim.send(raws)
    sim.finalize()
    done = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for chunk in range(22):
                sim.send([anchor(sim, service, f"k-{chunk}-{i}") for i in range(100)])
                sim.finalize()
                time.sleep(0.3)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    dbname = f"t_{uuid.uuid4().hex[:10]}"
    dsn = postgres.dsn(dbname)
    server, secret_env = postgres.child_dsn("postgres")  # no password in argv
    argv = projector_argv(
        sim.genesis_path, bootstrap, sim.prefix, server, dbname, "--batch-size", "300"
    )
    log = tmp_path / "projector.log"
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    kills, heights = 0, []
    rng = random.Random(7)
    while not done.is_set() or kills < 5:
        proc = _start(argv, log, secret_env)
        # Kill it once it has made progress (a loaded machine starts it slowly), at a random
        # point of its work.
        before, deadline = _height(dsn), time.monotonic() + 30
        while _height(dsn) <= before and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.8))
        assert proc.poll() is None, log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        heights.append(_height(dsn))
    thread.join(60)
    assert not errors, errors
    height = sim.finalize()
    proc = _start(argv, log, secret_env)
    try:
        deadline = time.monotonic() + 60
        while _height(dsn) < height and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # let it consume the trailing receipts and duplicates
        while not _handles_sigterm(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the height may be reached before it even started: wait for it
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    assert _height(dsn) == height, (heights, log.read_text()[-3000:])
    assert kills >= 5 and len(set(heights)) > 2, heights  # killed at many different points
    assert projected_rows(dsn) == expected_rows(sim.replay())

    clean = ProjectorConfig(
        institution="inst-1",
        genesis=sim.genesis_path,
        bootstrap=bootstrap,
        prefix=sim.prefix,
        dsn=postgres.dsn("postgres"),
        dbname=f"t_{uuid.uuid4().hex[:10]}",
    )
    projection, runner = prepare(clean)
    try:
        while projection.height < height or any(runner.lag().values()):
            runner.step(0.2)
    finally:
        runner.close()
    killed, fresh = dump_all(dsn), dump_all(runner.dsn)
    assert killed == fresh
    assert projection.counters["blocks_invalid"] > 0
    sim.close()
