"""A client's submit-to-outcome latency: a bare receipt (before D22) and a verified outcome.

Starts a private single-node Kafka and a 4-institution consortium (one validator process
each, as ``bench.consensus`` does), measures the burst throughput the same way, then sends
``--txs / 4`` pre-signed transactions paced at half that rate (or at ``--rate``) while two
readers run side by side in this process:

* **receipt** (the path before D22): the first ``Receipt`` of each tx id on
  ``<prefix>receipts``, decoded and believed, read with the old SDK watcher's loop
  (``consume(500, 0.1)``) and, to isolate the cost of verification, with the new watcher's
  loop (``consume_ready``);
* **verified** (D22): :class:`streams.receipts.ReceiptWatcher`, which reads
  ``<prefix>blocks`` and verifies each ``FinalizedBlock``'s quorum certificate against the
  genesis validator set before any of its outcomes exists.

Latency is per transaction, from its produce call to the moment each reader has its outcome.
Prints p50/p99 of each and of the per-transaction difference (same loop), and the CPU seconds this
process spent. Figures only; nothing is asserted.

    python -m bench.outcomes [--txs 20000] [--institutions 4] [--rate R]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.consensus import (
    Receipts,
    percentile,
    presigned,
    run_case,
    send,
    sent_at,
    spawn_validators,
)
from harness.stack_fixtures import private_settings
from infra.kafka_server import KafkaCluster
from infra.keystore import create_genesis
from infra.procs import stop_all
from ledger.outcomes import CertifiedBlock
from runtime.kafka_config import admin_config, consume_ready, consumer_config, producer_config
from runtime.topics import ensure_topics
from streams.receipts import Receipt, ReceiptWatcher


class ReceiptReader(threading.Thread):
    """The path before D22: the first ``Receipt`` per tx id on the receipts topic, believed.
    ``old_loop``: read as the SDK's watcher did (``consume(500, 0.1)``, which waits for the
    batch to fill or the timeout); else as the verified watcher reads (``consume_ready``)."""

    def __init__(self, bootstrap: str, topic: str, *, old_loop: bool) -> None:
        super().__init__(daemon=True)
        self.seen: dict[bytes, float] = {}
        self.stop = False
        self.old_loop = old_loop
        self.consumer = Consumer(consumer_config(bootstrap, f"bench-{time.time_ns()}"))
        _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        self.consumer.assign([TopicPartition(topic, 0, high)])

    def run(self) -> None:
        while not self.stop:
            if self.old_loop:
                messages = self.consumer.consume(500, 0.1)
            else:
                messages = consume_ready(self.consumer, 500, 0.1)
            for msg in messages:
                if msg.error() is None:
                    tx_id = Receipt.decode(msg.value() or b"").tx_id
                    self.seen.setdefault(tx_id, time.time())
        self.consumer.close()


class TimedWatcher(ReceiptWatcher):
    """The SDK's verified-outcome watcher, noting when each tx id's outcome became known."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.seen: dict[bytes, float] = {}
        self.fetch_lag: list[float] = []  # broker append -> handed to the watcher, per copy
        self.handling: list[float] = []  # seconds spent handling each batch of copies
        self.slowest = (0.0, 0.0, 0)  # (wall s, this thread's CPU s, copies) of the slowest
        super().__init__(*args, **kwargs)

    def _ingest(self, messages: list[Message]) -> None:
        now, began, cpu = time.time(), time.monotonic(), time.thread_time()
        for msg in messages:
            kind, stamp = msg.timestamp()
            if msg.error() is None and kind:
                self.fetch_lag.append(now - stamp / 1000)
        super()._ingest(messages)
        wall = time.monotonic() - began
        self.handling.append(wall)
        if wall > self.slowest[0]:
            self.slowest = (wall, time.thread_time() - cpu, len(messages))

    def _accept(self, offset: int, block: CertifiedBlock) -> None:
        super()._accept(offset, block)
        now = time.time()
        for r in block.results:
            self.seen.setdefault(r.tx_id, now)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait(seen: dict[bytes, float], ids: list[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(t in seen for t in ids):
        time.sleep(0.1)


def report(
    paced: list[bytes],
    sent: dict[bytes, float],
    old: dict[bytes, float],
    same: dict[bytes, float],
    verified: dict[bytes, float],
) -> None:
    """Print p50/p99 of each reader's latency and of the verified-minus-receipt difference."""

    def ms(values: list[float], p: float) -> str:
        return f"{percentile(values, p) * 1000:6.0f} ms"

    for label, seen in (
        ("before: first receipt, old SDK loop", old),
        ("first receipt, same loop as after", same),
        ("after: verified certified block", verified),
    ):
        values = [seen[t] - sent[t] for t in paced if t in seen]
        print(f"  {label:36} {len(values):6} outcomes  p50 {ms(values, 50)}  p99 {ms(values, 99)}")
    delta = [verified[t] - same[t] for t in paced if t in same and t in verified]
    print(
        f"  verified - receipt (same loop), per tx: p50 {percentile(delta, 50) * 1000:+.1f} ms,"
        f" p99 {percentile(delta, 99) * 1000:+.1f} ms"
    )


def run(bootstrap: str, work: Path, institutions: int, txs: int, rate: float | None) -> None:
    names = [f"inst-{i + 1}" for i in range(institutions)]
    prefix = f"outcomes{institutions}-{time.time_ns()}."
    net = work / f"net-{prefix}"
    genesis = create_genesis(net, "bench", names, block_interval_ms=100, max_block_txs=500)
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix)
    procs = spawn_validators(bootstrap, work, net, prefix, names)
    try:
        burst_n, paced_n = txs, txs // 4
        keys, signed, ids = presigned(net, names, burst_n + paced_n)
        receipts = Receipts(bootstrap, prefix + "receipts")
        receipts.start()
        producer = Producer(producer_config(bootstrap))
        sent: dict[bytes, float] = {}
        record = sent_at(ids, sent)
        time.sleep(2)  # validators up
        began = time.time()
        send(producer, prefix + "tx", keys, signed, which=range(burst_n), rate=None, on_send=record)
        _wait(receipts.seen, ids[:burst_n], 300)
        last = max(receipts.seen.get(t, began) for t in ids[:burst_n])
        throughput = burst_n / (last - began)
        paced_rate = rate if rate is not None else throughput / 2
        verified = TimedWatcher(bootstrap, genesis=genesis, prefix=prefix)
        old = ReceiptReader(bootstrap, prefix + "receipts", old_loop=True)
        same = ReceiptReader(bootstrap, prefix + "receipts", old_loop=False)
        old.start()
        same.start()
        cpu_before = _cpu()
        send(
            producer,
            prefix + "tx",
            keys,
            signed,
            which=range(burst_n, burst_n + paced_n),
            rate=paced_rate,
            on_send=record,
        )
        paced = ids[burst_n:]
        _wait(receipts.seen, paced, 300)
        for seen in (verified.seen, old.seen, same.seen):
            _wait(seen, paced, 60)
        cpu = _cpu() - cpu_before
        counts = verified.counts()
        verified.close()
        for reader in (receipts, old, same):
            reader.stop = True
            reader.join(5)

        print(
            f"{institutions} institution(s): burst {throughput:,.0f} finalized tx/s; "
            f"{paced_n} tx paced at {paced_rate:,.0f} tx/s"
        )
        report(paced, sent, old.seen, same.seen, verified.seen)
        lag, handling = verified.fetch_lag, verified.handling
        print(
            f"  verified watcher: broker append -> fetched p50 {percentile(lag, 50) * 1000:.0f} ms"
            f", p99 {percentile(lag, 99) * 1000:.0f} ms; handling a fetched batch p50 "
            f"{percentile(handling, 50) * 1000:.1f} ms, p99 {percentile(handling, 99) * 1000:.1f}"
            f" ms; the slowest: {verified.slowest[0] * 1000:.0f} ms wall, "
            f"{verified.slowest[1] * 1000:.0f} ms CPU of its thread, {verified.slowest[2]} copies"
        )
        print(
            f"  blocks verified up to height {counts['verified_height']}, duplicate copies "
            f"{counts['duplicates']}, refused {counts['forged'] + counts['unverifiable']}; "
            f"this process's CPU during the paced run {cpu:.1f} s (all readers)"
        )
    finally:
        stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--txs", type=int, default=20000, help="burst size (paced: a quarter)")
    parser.add_argument("--institutions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=None, help="paced rate (default: half)")
    parser.add_argument("--warmup", type=int, default=5000, help="1-institution warm-up txs")
    args = parser.parse_args()
    settings = private_settings()
    cluster = KafkaCluster(settings)
    cluster.start()
    try:
        if args.warmup > 0:
            run_case(
                settings.bootstrap_servers,
                settings.state_dir,
                1,
                args.warmup,
                brokers=[],
                workers=0,
            )
        run(settings.bootstrap_servers, settings.state_dir, args.institutions, args.txs, args.rate)
    finally:
        cluster.stop()
        shutil.rmtree(settings.state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
