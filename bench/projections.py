"""Projection throughput and lag behind finality, against a real broker and PostgreSQL.

Starts a private single-node Kafka and PostgreSQL. Finality is simulated in-process by
``tests.integration.test_projections_support.SimChain`` (the pure core cuts, executes and
certifies blocks, published twice each as two validators would), so the figures are the
projector's own:

1. catch-up: ``--txs`` AnchorData transactions are finalized first, then one projector
   projects them from offset 0; prints rows/s and transactions/s;
2. live: transactions arrive at ``--rate`` per second for ``--seconds`` and are finalized as
   they come; the lag (final height minus projected height, in blocks) is sampled every
   50 ms while the projector runs in a thread.

    python -m bench.projections [--txs 20000] [--rate 2000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from projections.projector import ProjectorConfig, prepare
from tests.integration.test_projections_support import SimChain, anchor
from tests.stack_fixtures import private_settings


def main() -> None:  # noqa: PLR0915 (one linear script)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000.0, help="live load, tx/s")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--block-txs", type=int, default=500)
    args = parser.parse_args()
    settings = private_settings()
    kafka, postgres = KafkaCluster(settings), Postgres(settings)
    work = Path(tempfile.mkdtemp(prefix="bench-proj-"))
    try:
        kafka.start()
        postgres.start()
        bootstrap = settings.bootstrap_servers
        sim = SimChain(bootstrap, "bench.", work, max_block_txs=args.block_txs)
        signer = sim.gov("inst-1")
        for start in range(0, args.txs, 2000):
            sim.send(
                [anchor(sim, signer, f"a-{i}") for i in range(start, min(args.txs, start + 2000))]
            )
        height = sim.finalize()
        config = ProjectorConfig(institution="inst-1", genesis=sim.genesis_path,
                                 bootstrap=bootstrap, prefix="bench.",
                                 dsn=postgres.dsn("postgres"))  # fmt: skip
        projection, runner = prepare(config)
        began = time.perf_counter()
        while projection.height < height:
            runner.step(0.2)
        took = time.perf_counter() - began
        print(f"catch-up: {args.txs} txs, {height} blocks, {projection.rows_written} rows in "
              f"{took:.2f}s = {projection.rows_written / took:,.0f} rows/s, "
              f"{args.txs / took:,.0f} tx/s")  # fmt: skip

        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        lags: list[int] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                lags.append(sim.machine.height - projection.height)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rows0, sent, t0 = projection.rows_written, 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            due = int((time.perf_counter() - t0) * args.rate) - sent
            if due > 0:
                sim.send([anchor(sim, signer, f"l-{sent + i}") for i in range(due)])
                sent += due
                sim.finalize()
            time.sleep(0.02)
        final = sim.finalize()
        deadline = time.monotonic() + 30
        while projection.height < final and time.monotonic() < deadline:
            time.sleep(0.05)
        live = time.perf_counter() - t0
        sampling.set()
        sampler.join()
        stop.set()
        thread.join(30)
        lags.sort()
        print(
            f"live: {sent} txs at {args.rate:,.0f} tx/s offered ({sent / args.seconds:,.0f} "
            f"achieved), {(projection.rows_written - rows0) / live:,.0f} rows/s projected"
        )
        print(f"lag behind finality (blocks of {args.block_txs} tx): "
              f"p50 {statistics.median(lags):.0f}, p95 {lags[int(0.95 * (len(lags) - 1))]}, "
              f"max {lags[-1]} over {len(lags)} samples")  # fmt: skip
        sim.close()
    finally:
        postgres.stop()
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
