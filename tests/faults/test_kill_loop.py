"""The kill loop: under continuous load from several producers, SIGKILL a random process
(one of 4 validators, the chain projector, the Layer-2 batcher) at random moments,
``PANTHEON_KILLS`` times (default 20), restarting each at once.

At the end: every transaction the broker acknowledged is final exactly once (result OK), all
validators agree on every block (one certified version per height, equal to the oracle's
re-execution of the tx log), the killed projector's tables equal the replay, and every
Layer-2 reading the broker acknowledged is in a committed batch whose root a final block holds
(a sample is proven offline end to end). The history figures are printed.

Long run by hand: ``PANTHEON_KILLS=100 .venv/bin/pytest -s tests/faults/test_kill_loop.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaError, Producer

from infra.postgres_server import Postgres
from ledger.keys import KeyPair
from ledger.proofs import verify_record_proof
from ledger.results import ResultCode
from streams.kafka_config import producer_config
from streams.proofs import record_proof
from tests.consortium import REPO, Consortium, Replay, anchor_args
from tests.integration.test_consensus import check_chain, check_votes, operators
from tests.integration.test_l2_support import L2Stack, workload
from tests.integration.test_projections_support import expected_rows, projected_rows

pytestmark = [pytest.mark.integration, pytest.mark.faults]

KILLS = int(os.environ.get("PANTHEON_KILLS", "20"))
BATCHER_ARGS = ("--max-records", "200", "--window-ms", "300", "--instance-id", "b1")


class Producing:
    """A producer thread: signed AnchorData at a steady rate, counting broker acks."""

    def __init__(self, c: Consortium, signer: KeyPair, tag: str, rate: float) -> None:
        self.c, self.signer, self.tag, self.interval = c, signer, tag, 1.0 / rate
        self.produced: dict[bytes, bytes] = {}
        self.acked: set[bytes] = set()
        self.failed: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=tag, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        from ledger.tx import parse_tx  # noqa: PLC0415

        producer = Producer(producer_config(self.c.bootstrap))
        try:
            i = 0
            while not self.stop_event.is_set():
                raw = self.c.tx(self.signer, "AnchorData", anchor_args(f"{self.tag}-{i}"))
                tid = parse_tx(raw).tx_id
                self.produced[tid] = raw

                def done(err: KafkaError | None, _msg: object, tid: bytes = tid) -> None:
                    if err is None:
                        self.acked.add(tid)
                    else:
                        self.failed.append(str(err))

                producer.produce(self.c.topic("tx"), key=self.signer.key_id, value=raw,
                                 on_delivery=done)  # fmt: skip
                producer.poll(0)
                i += 1
                self.stop_event.wait(self.interval)
            assert producer.flush(60) == 0
        except BaseException as exc:
            self.error = exc

    def start(self) -> Producing:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(90)
        if self.error is not None:
            raise self.error


class Projector:
    """The chain projector of inst-1 as an OS process on its own database."""

    def __init__(self, stack: L2Stack, postgres: Postgres, workdir: Path) -> None:
        self.dbname = f"kl_{uuid.uuid4().hex[:10]}"
        self.dsn = postgres.dsn(self.dbname)
        self.log = workdir / "projector.log"
        c = stack.consortium
        self.argv = [sys.executable, "-m", "projections.projector", "--institution", "inst-1",
                     "--genesis", str(c.genesis_path), "--bootstrap", c.bootstrap, "--prefix",
                     c.prefix, "--dsn", postgres.dsn("postgres"), "--dbname", self.dbname,
                     "--batch-size", "200"]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=out, cwd=REPO, env=env,
                                         start_new_session=True)  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def height(self) -> int:
        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                row = conn.execute("SELECT height FROM chain.meta").fetchone()
                return int(row[0]) if row else -1
        except psycopg.Error:
            return -1


@pytest.fixture
def stack(bootstrap: str, postgres: Postgres, tmp_path: Path) -> Iterator[L2Stack]:
    s = L2Stack(bootstrap, postgres.dsn("postgres"), tmp_path, devices=10, n=4)
    try:
        yield s
    finally:
        s.close()


def wait_for(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_kill_loop_loses_and_duplicates_nothing(
    stack: L2Stack, postgres: Postgres, tmp_path: Path
) -> None:
    c = stack.consortium
    c.wait_ready(c.institutions)
    projector = Projector(stack, postgres, tmp_path)
    projector.start()
    stack.start_batcher(*BATCHER_ARGS)
    # inst-1's governance key already signed through the SDK (set-up): the others produce
    producers = [
        Producing(c, c.gov_key(inst), f"p-{inst}", rate=8).start() for inst in c.institutions[1:]
    ]
    w = workload(stack.devices, 40 * KILLS, bad_every=25)
    chunks = [w.messages[i : i + 40] for i in range(0, len(w.messages), 40)]
    rng = random.Random(int(os.environ.get("PANTHEON_KILL_SEED", "11")))
    victims = [*c.institutions, "projector", "batcher"]
    kills: Counter[str] = Counter()
    started = time.monotonic()
    try:
        for n in range(KILLS):
            if n < len(chunks):
                stack.send(chunks[n])
            time.sleep(rng.uniform(0.2, 1.0))
            victim = rng.choice(victims)
            if victim == "projector":
                projector.kill()
                projector.start()
            elif victim == "batcher":
                stack.kill_batcher()
                stack.start_batcher(*BATCHER_ARGS)
            else:
                c.kill(victim)
                c.restart(victim)
            kills[victim] += 1
        for chunk in chunks[KILLS:]:
            stack.send(chunk)
    finally:
        for p in producers:
            p.stop()
    loop_s = time.monotonic() - started
    produced = {t: r for p in producers for t, r in p.produced.items()}
    acked = set().union(*(p.acked for p in producers))
    failed = [f for p in producers for f in p.failed]

    # every acknowledged transaction is final, exactly once, with result OK
    def all_final() -> bool:
        entries = c.final_entries()
        return all(len(entries.get(t, [])) >= 1 for t in acked)

    c.wait_until(all_final, timeout=120, what="every acknowledged tx final")
    stack.wait_done(w, timeout=120)
    top, replay = check_chain(c)
    c.wait_final(top, c.institutions, timeout=90)
    entries = c.final_entries()
    duplicated = sum(1 for t in acked if len(entries.get(t, [])) > 1)
    lost = sum(1 for t in acked if not entries.get(t))
    not_ok = [t for t in acked if entries.get(t) and entries[t][0][1] != ResultCode.OK]
    final = sum(1 for t in produced if entries.get(t))
    assert (lost, duplicated, not_ok) == (0, 0, []), (lost, duplicated, len(not_ok))
    check_votes(c, operators(c))
    for inst in c.institutions:
        status = c.status(inst)
        assert status is not None and not status["diverged"], (inst, status)

    # the killed projector equals the replay
    wait_for(lambda: projector.height() >= top, 90, f"projector at {top}")
    time.sleep(1.0)
    assert projector.stop() == 0, projector.log.read_text()[-3000:]
    height = projector.height()
    upto = Replay(machine=replay.machine, blocks=replay.blocks[:height])
    assert height >= top and projected_rows(projector.dsn) == expected_rows(upto)

    # every acknowledged reading is anchored once under a root of a final block; a sample
    # is proven offline from the genesis alone
    stack.check(w)
    with stack.connect() as conn:
        for kid, seq in random.Random(3).sample(sorted(w.valid), min(20, len(w.valid))):
            proof = record_proof(conn, kid, seq)
            assert proof is not None, (kid.hex(), seq)
            assert verify_record_proof(proof, c.genesis).sequence == seq
    print(
        f"\nkill loop: {sum(kills.values())} SIGKILLs in {loop_s:.0f}s {dict(kills)}; "
        f"tx produced {len(produced)}, acknowledged {len(acked)}, final {final}, "
        f"lost {lost}, duplicated {duplicated}, producer errors {len(failed)}; "
        f"final height {top}, projector height {height}; L2 readings {len(w.valid)} "
        f"acknowledged and anchored, {sum(w.rejects.values())} hostile rejected; "
        f"validator exit codes {c.exit_codes}"
    )
