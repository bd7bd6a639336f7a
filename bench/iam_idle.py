"""How long an honest IAM change takes on an idle chain (D62's clock tick) and on a busy one.

Starts a private single-node Kafka and PostgreSQL and four real validator processes
(:class:`harness.consortium.Consortium`); ``inst-1``'s IAM key is registered on chain, and
its chain and IAM projections (production signer policy) run in this process beside its
:class:`~gateway.iam.service.IamService`. The skew S is lowered to ``--skew-ms`` for this
process (every reader and the publisher read the module constant).

Each round leaves the chain idle for more than S, then times ``create_group`` (its event
needs a block stamped after its append time minus S: the service sends one tick, the
validators cut one block), then times a second ``create_group`` at once (the chain is fresh:
no tick). Prints the wall time of each kind of call (median, max) and this process's CPU
time per call (the publisher and both projections, which run here), with the ticks counted
on chain and the machine's load; never asserts a timing.

    python -m bench.iam_idle [--rounds 5] [--skew-ms 2000] [--block-interval-ms 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient

from gateway.auth.crypto import MasterKey
from gateway.auth.passwords import FAST
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.service import IamService
from gateway.iam.signing import IamSigner, chain_key_height
from harness.consortium import Consortium
from harness.stack_fixtures import private_servers
from infra.postgres_server import Postgres
from ledger import iam_time
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from projections.iam import ChainSigners, IamProjection
from projections.projector import ProjectorConfig, prepare
from projections.runner import ProjectionRunner
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics

INST = "inst-1"


def _wait(check: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _query(dsn: str, sql: str, *params: object) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchone()


def _last_stamp(dsn: str) -> int:
    row = _query(dsn, "SELECT b.timestamp_ms FROM chain.blocks b JOIN chain.meta m USING (height)")
    return int(str(row[0])) if row else 0


def _timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(bootstrap: str, postgres: Postgres, work: Path, args: argparse.Namespace) -> None:
    iam_time.SKEW_MS = args.skew_ms  # the whole process: publisher and readers alike
    consortium = Consortium(bootstrap, work / "c", 4, block_interval_ms=args.block_interval_ms)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        consortium.start_all()
        ensure_topics(
            AdminClient(admin_config(bootstrap)), prefix=consortium.prefix, institutions=[INST]
        )
        consortium.wait_ready(consortium.institutions)
        config = ProjectorConfig(
            institution=INST,
            genesis=consortium.genesis_path,
            bootstrap=bootstrap,
            prefix=consortium.prefix,
            dsn=postgres.dsn("postgres"),
            dbname=f"idle_{uuid.uuid4().hex[:8]}",
        )
        _projection, chain = prepare(config)
        iam = IamProjection(INST, prefix=consortium.prefix, signers=ChainSigners())
        for runner in (chain, ProjectionRunner(chain.dsn, bootstrap, iam)):
            threads.append(threading.Thread(target=runner.run, args=(stop,), daemon=True))
            threads[-1].start()
        dsn = chain.dsn
        key = KeyPair.from_seed(os.urandom(32))
        register = register_identity_args(
            key, chain_id=consortium.chain_id, institution_id=INST, kind="SERVICE", label="iam"
        )
        consortium.send([consortium.tx(consortium.gov_key(INST), "RegisterIdentity", register)])
        _wait(
            lambda: (
                _query(dsn, "SELECT 1 FROM chain.keys WHERE key_id = %s", key.key_id) is not None
            ),
            "the IAM key projected",
        )
        master = MasterKey(os.urandom(32))
        service = IamService(
            bootstrap=bootstrap,
            dsn=dsn,
            institution=INST,
            master_key=master,
            prefix=consortium.prefix,
            password_params=FAST,
            signer=IamSigner(key, chain_key_height(dsn, INST, key.key_id)),
        )
        try:
            credential = ensure_setup_credential(dsn, INST, master)
            assert credential is not None
            root = service.bootstrap_admin(credential, "root", "root-password")
            idle: list[tuple[float, float]] = []
            busy: list[tuple[float, float]] = []
            for i in range(args.rounds):
                until = _last_stamp(dsn) + args.skew_ms + 300
                while time.time() * 1000 < until:
                    time.sleep(0.05)
                idle.append(_timed(partial(service.create_group, root, f"idle-{i}")))
                busy.append(_timed(partial(service.create_group, root, f"busy-{i}")))
            row = _query(
                dsn, "SELECT count(*) FROM chain.transactions WHERE sender = %s", key.key_id
            )
            ticks = int(str(row[0])) if row else 0
        finally:
            service.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        with contextlib.redirect_stdout(io.StringIO()):  # its log tails: not the figures
            consortium.close()
    load = os.getloadavg()
    print(
        f"rounds {args.rounds}, S {args.skew_ms} ms, block interval "
        f"{args.block_interval_ms} ms, ticks on chain {ticks}, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    for name, samples in (("idle chain (tick)", idle), ("busy chain (none)", busy)):
        walls = [w for w, _ in samples]
        cpus = [c * 1000 for _, c in samples]
        print(
            f"{name}: wall median {statistics.median(walls):.2f} s, max {max(walls):.2f} s; "
            f"CPU of this process median {statistics.median(cpus):.1f} ms per call"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--rounds", type=int, default=5, help="idle/busy pairs of changes")
    parser.add_argument("--skew-ms", type=int, default=2000, help="S for this process")
    parser.add_argument(
        "--block-interval-ms", type=int, default=1000, help="the genesis block interval"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.skew_ms < 100 or args.block_interval_ms < 1:
        parser.error("--rounds >= 1, --skew-ms >= 100, --block-interval-ms >= 1")
    with private_servers("bench-iam-idle-") as (settings, _, postgres, work):
        run(settings.bootstrap_servers, postgres, work, args)


if __name__ == "__main__":
    main()
