"""Layer-2 throughput: readings anchored per second, beside the same run's signature-verify rate.

``python -m bench.l2 [--records 100000] [--bundle-readings 1000000] [--workers N]``

Starts a private Kafka and PostgreSQL (free ports, temporary state directory), a one-validator
chain and its projection (``harness.l2_support.L2Stack``), pre-produces the
device messages, then runs the batcher in this process and times it from its start until every
batch is committed in a final block and projected ("anchored"). Printed beside it:

* the Ed25519 verify ceiling on these very messages: one thread, N threads and N processes
  (the batcher's :class:`~readers.batcher.Verifier`), so the ratio anchored / ceiling is read
  off the same machine at the same time;
* the same for signed bundles of 100 readings (one signature per bundle).

Figures only, never assertions (DESIGN.md section 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from harness.l2_support import INSTITUTION, L2Stack
from harness.stack_fixtures import private_settings
from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from ledger.l2 import parse_l2
from readers.batcher import Batcher, BatcherConfig, Job, Verifier
from streams.devices import Device


def make_messages(devices: list[Device], readings: int, bundle: int) -> list[tuple[bytes, bytes]]:
    """``readings`` readings round-robin over ``devices``, as records or bundles of ``bundle``."""
    out: list[tuple[bytes, bytes]] = []
    now = int(time.time() * 1000)
    per_device = readings // len(devices)
    step = bundle if bundle > 1 else 1
    for i in range(0, per_device, step):
        for d in devices:
            if bundle > 1:
                out.append(d.bundle([(now + i + j, b"%d" % (i + j)) for j in range(bundle)]))
            else:
                out.append(d.record(b"reading %d" % i, measured_at_ms=now + i))
    return out


def verify_rates(messages: list[tuple[bytes, bytes]], workers: int) -> dict[str, float]:
    """Messages verified per second: 1 thread, ``workers`` threads, ``workers`` processes."""
    keys = dict(_public_keys)
    jobs: list[Job] = []
    for _, raw in messages:
        p = parse_l2(raw)
        jobs.append((keys[p.device_key_id], p.signature, p.signed))
    rates: dict[str, float] = {}
    for label, verifier in (
        ("1 thread", Verifier(1)),
        (f"{workers} threads", Verifier(workers)),
        (f"{workers} processes", Verifier(workers, processes=True)),
    ):
        verifier.verify(jobs[: 4 * 512])  # warm up (process start, key cache)
        best = 0.0
        for _ in range(3):  # best of 3: the machine is shared
            start = time.perf_counter()
            assert all(verifier.verify(jobs))
            best = max(best, len(jobs) / (time.perf_counter() - start))
        rates[label] = best
        verifier.close()
    return rates


_public_keys: dict[bytes, bytes] = {}


def anchored_rate(
    stack: L2Stack, messages: list[tuple[bytes, bytes]], readings: int, workers: int
) -> tuple[float, float]:
    """(readings anchored per second, seconds) for the batcher over pre-produced messages, timed
    from the moment the batcher holds its partitions (the group join is not throughput)."""
    stack.send(messages)
    config = BatcherConfig(
        institution=INSTITUTION,
        key=stack.service,
        chain_id=stack.consortium.chain_id,
        genesis=stack.consortium.genesis,
        bootstrap=stack.bootstrap,
        dsn=stack.dsn,
        prefix=stack.prefix,
        max_records=10_000,
        window_ms=300,
        verify_workers=workers,
    )
    batcher = Batcher(config)
    batcher.prepare()
    stop = threading.Event()
    thread = threading.Thread(target=batcher.run, args=(stop,))
    start = time.perf_counter()
    thread.start()
    with stack.connect() as conn:
        while True:
            row = conn.execute(
                "SELECT coalesce(sum(b.record_count), 0) FROM l2.batches b "
                "JOIN chain.l2_batches c USING (batch_id) WHERE b.state = 'committed'"
            ).fetchone()
            if row is not None and int(row[0]) >= readings:
                break
            if not thread.is_alive():
                raise RuntimeError("batcher stopped")
            time.sleep(0.05)
    end = time.monotonic()
    elapsed = end - (batcher.assigned_at or end - (time.perf_counter() - start))
    stop.set()
    thread.join()
    return readings / elapsed, elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--bundle-readings", type=int, default=1_000_000)
    p.add_argument("--bundle-size", type=int, default=100)
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    settings = private_settings()
    kafka, postgres = KafkaCluster(settings), Postgres(settings)
    work = Path(tempfile.mkdtemp(prefix="bench-l2-"))
    print(f"cores: {os.cpu_count()}, verify workers: {args.workers}")
    try:
        kafka.start()
        postgres.start()
        for label, readings, size in (
            ("single-signed records", args.records, 1),
            (f"bundles of {args.bundle_size}", args.bundle_readings, args.bundle_size),
        ):
            stack = L2Stack(
                kafka.settings.bootstrap_servers,
                postgres.dsn("postgres"),
                work / label.replace(" ", "-"),
                devices=args.devices,
            )
            try:
                _public_keys.update({d.key.key_id: d.key.public_key for d in stack.devices})
                t0 = time.perf_counter()
                messages = make_messages(stack.devices, readings, size)
                made = time.perf_counter() - t0
                total = len(messages) * size
                rates = verify_rates(messages, args.workers)
                rate, elapsed = anchored_rate(stack, messages, total, args.workers)
                ceiling = max(rates.values())
                print(
                    f"\n{label}: {total} readings in {len(messages)} messages "
                    f"(signed in {made:.1f}s)"
                )
                for name, r in rates.items():
                    print(
                        f"  verify ceiling, {name:>12}: {r:>10,.0f} signatures/s "
                        f"= {r * size:>12,.0f} readings/s"
                    )
                print(
                    f"  anchored (final, projected): {rate:>10,.0f} readings/s "
                    f"({elapsed:.2f}s), {rate / (ceiling * size):.0%} of the verify ceiling"
                )
            finally:
                stack.close()
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(settings.state_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
