"""Projection throughput and lag behind finality, against a real broker and PostgreSQL.

Starts a private single-node Kafka and PostgreSQL, then:

1. catch-up: ``--txs`` AnchorData transactions are finalized by
   ``harness.projections_support.SimChain`` (the pure core, in this process),
   then one projector projects them from offset 0; prints rows/s and transactions/s;
2. live, at the consensus benchmark's load: a consortium of ``--institutions`` real
   validator processes (as ``bench.consensus`` runs them, but at ``nice`` 5: here four
   institutions' validators share the projector's two cores, which no deployment does, so
   contention is settled in favour of the process under measurement) and one real projector
   process (``python -m projections.projector``). A burst of ``--burst`` pre-signed transactions
   measures the finalized rate with the projector running; then transactions arrive at half
   that rate (``bench.consensus``'s latency load) for ``--seconds``. Lag is measured exactly,
   not sampled: a block is final when its first copy was appended to the blocks topic
   (broker ``LogAppendTime``) and projected when the PostgreSQL transaction that wrote its
   row committed (``pg_xact_commit_timestamp``; the bench's server runs with
   ``track_commit_timestamp``), both on this host's clock. From the two series: per block,
   final to projected and whether it was projected before the next block was final (the
   exact sense of "at most one block behind"), and the lag in blocks over time
   (final heights minus projected heights, weighted by how long each value lasted).

    python -m bench.projections [--txs 20000] [--burst 10000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.consensus import cpu_seconds, percentile, presigned, send, spawn_validators
from harness.projections_support import SimChain, anchor
from harness.stack_fixtures import private_servers
from infra.keystore import create_genesis
from infra.postgres_server import Postgres
from infra.procs import descendants
from ledger.blocks import decode_finalized
from projections.projector import ProjectorConfig, database_name, prepare
from runtime.kafka_config import admin_config, consumer_config, producer_config
from runtime.topics import ensure_topics


def catch_up(bootstrap: str, dsn: str, work: Path, txs: int, block_txs: int) -> None:
    """Finalize ``txs`` in-process, then project them from offset 0; print the rate."""
    sim = SimChain(bootstrap, "catchup.", work, max_block_txs=block_txs)
    signer = sim.gov("inst-1")
    for start in range(0, txs, 2000):
        sim.send([anchor(sim, signer, f"a-{i}") for i in range(start, min(txs, start + 2000))])
    height = sim.finalize()
    sim.close()
    config = ProjectorConfig(
        institution="inst-1",  # a member of the genesis, in a database of its own
        dbname="pantheon_catchup",
        genesis=sim.genesis_path,
        bootstrap=bootstrap,
        prefix="catchup.",
        dsn=dsn,
    )
    projection, runner = prepare(config)
    began = time.perf_counter()
    while projection.height < height:
        runner.step(0.2)
    took = time.perf_counter() - began
    runner.close()  # its Kafka clients go now, not after the broker stopped (D71)
    print(
        f"catch-up: {txs:,} txs, {height} blocks, {projection.rows_written:,} rows in "
        f"{took:.2f} s = {projection.rows_written / took:,.0f} rows/s, "
        f"{txs / took:,.0f} tx/s"
    )


class Heights(threading.Thread):
    """Watches finality and projection: the newest final height on the blocks topic with the
    broker time each height first appeared there (``LogAppendTime``), and the projected
    height, polled every 10 ms with the time each height was first seen projected. Samples
    (time, final, projected) every 50 ms for the lag in blocks."""

    def __init__(self, bootstrap: str, topic: str, dsn: str) -> None:
        super().__init__(daemon=True)
        self.final = 0
        self.final_txs = 0
        self.projected = 0
        self.samples: list[tuple[float, int, int]] = []
        self.final_at: dict[int, float] = {}  # height -> wall time it became final
        self.projected_at: dict[int, float] = {}  # height -> wall time it was seen projected
        self.stop = threading.Event()
        self.consumer = Consumer(consumer_config(bootstrap, f"bench-{time.time_ns()}"))
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.dsn = dsn

    def run(self) -> None:
        next_sample = 0.0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                for msg in self.consumer.consume(100, 0.005):
                    if msg.error() is None:
                        header, _, results = decode_finalized(msg.value() or b"")
                        if header.height > self.final:  # each validator publishes a copy
                            self.final = header.height
                            self.final_txs += len(results)
                            self.final_at[header.height] = msg.timestamp()[1] / 1000
                try:
                    row = conn.execute("SELECT height FROM chain.meta").fetchone()
                except psycopg.errors.UndefinedTable:  # the projector has not made it yet
                    row = None
                projected = int(row[0]) if row else 0
                now = time.time()
                for height in range(self.projected + 1, projected + 1):
                    self.projected_at[height] = now
                self.projected = max(self.projected, projected)
                if time.monotonic() >= next_sample:
                    self.samples.append((time.monotonic(), self.final, self.projected))
                    next_sample = time.monotonic() + 0.05
                self.stop.wait(0.005)
        self.consumer.close()

    def load_commit_times(self) -> None:
        """Replace the polled projection times by each block row's commit time."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT height, extract(epoch FROM pg_xact_commit_timestamp(xmin)) "
                "FROM chain.blocks"
            ).fetchall()
        self.projected_at = {int(h): float(t) for h, t in rows if t is not None}

    def lag_time(self, since: float, until: float) -> dict[int, float]:
        """Seconds spent at each lag (final heights minus projected heights) between the
        wall times ``since`` and ``until``."""
        events = sorted(
            [(t, 1) for t in self.final_at.values()] + [(t, -1) for t in self.projected_at.values()]
        )
        lag, last, spent = 0, since, dict[int, float]()
        for at, step in events:
            if at > until:
                break
            if at > since:
                spent[lag] = spent.get(lag, 0.0) + at - last
                last = at
            lag += step
        spent[lag] = spent.get(lag, 0.0) + until - last
        return spent

    def delays(self, heights: range) -> tuple[list[float], int, int, list[float]]:
        """For ``heights``: the sorted seconds from final to projected; how many were
        projected before the next height became final (so the projector was never more than
        one block behind) out of how many could be judged; and, for those that were not,
        the sorted seconds between their finality and the next height's."""
        out = sorted(
            self.projected_at[h] - self.final_at[h]
            for h in heights
            if h in self.final_at and h in self.projected_at
        )
        judged = [h for h in heights if h in self.projected_at and h + 1 in self.final_at]
        within = sum(1 for h in judged if self.projected_at[h] <= self.final_at[h + 1])
        gaps = sorted(
            self.final_at[h + 1] - self.final_at[h]
            for h in judged
            if self.projected_at[h] > self.final_at[h + 1]
        )
        return out, within, len(judged), gaps

    def settle(self, txs: int, timeout: float) -> None:
        """Until ``txs`` transactions are final and the projector has reached the top."""
        end = time.monotonic() + timeout
        while self.final_txs < txs or self.projected < self.final:
            if time.monotonic() > end:
                raise TimeoutError(
                    f"{self.final_txs} of {txs} final, projected {self.projected} of {self.final}"
                )
            time.sleep(0.05)


def spawn_projector(
    bootstrap: str, postgres: Postgres, net: Path, prefix: str, institution: str
) -> subprocess.Popen[bytes]:
    """A real projector process for ``institution``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "projections.projector",
            "--institution",
            institution,
            "--genesis",
            str(net / "genesis.avro"),
            "--bootstrap",
            bootstrap,
            "--prefix",
            prefix,
            "--dsn",
            postgres.dsn("postgres"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_database(dsn: str, timeout: float = 60) -> None:
    """Until the projector has created its database."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def describe_lag(spent: dict[int, float]) -> str:
    """``spent`` (seconds at each lag) as shares of the time and the worst lag."""
    total = sum(spent.values()) or 1.0
    within = sum(t for lag, t in spent.items() if lag <= 1)
    shares = ", ".join(f"{lag}: {100 * t / total:.1f}%" for lag, t in sorted(spent.items()))
    return (
        f"at most one block behind {100 * within / total:.2f}% of the time, max "
        f"{max(spent)} (time at each lag: {shares})"
    )


def print_per_block(heights: Heights, paced: range) -> None:
    """The per-block lag figures of the paced run."""
    delays, within, judged, gaps = heights.delays(paced)
    print(
        f"  per block, final to projected (commit time): p50 "
        f"{1000 * percentile(delays, 50):.0f} ms, p99 {1000 * percentile(delays, 99):.0f}"
        f" ms, max {1000 * delays[-1]:.0f} ms over {len(delays)} blocks; {within} of "
        f"{judged} projected before the next block was final (never more than one block "
        "behind)"
    )
    if gaps:
        print(
            f"  for the {len(gaps)} others, the next block became final "
            f"{1000 * percentile(gaps, 50):.0f} ms after them (median; max "
            f"{1000 * gaps[-1]:.0f} ms)"
        )


def live(settings_bootstrap: str, postgres: Postgres, work: Path, args: argparse.Namespace) -> None:
    """Real validators and a real projector process under the consensus benchmark's load."""
    names = [f"inst-{i + 1}" for i in range(args.institutions)]
    prefix = f"live-{time.time_ns()}."
    net = work / "net"
    create_genesis(net, "bench", names, block_interval_ms=100, max_block_txs=args.block_txs)
    ensure_topics(AdminClient(admin_config(settings_bootstrap)), prefix=prefix)
    procs = spawn_validators(settings_bootstrap, work, net, prefix, names, niceness=5)
    procs.append(spawn_projector(settings_bootstrap, postgres, net, prefix, names[0]))
    try:
        paced_n = int(args.seconds * 2000)  # enough for half of any rate this machine reaches
        keys, signed, _ = presigned(net, names, args.burst + paced_n)
        producer = Producer(producer_config(settings_bootstrap))
        wait_for_database(postgres.dsn(database_name(names[0])))
        heights = Heights(
            settings_bootstrap, prefix + "blocks", postgres.dsn(database_name(names[0]))
        )
        heights.start()
        time.sleep(2)

        began, began_wall, start_height = time.monotonic(), time.time(), heights.final
        send(producer, prefix + "tx", keys, signed, which=range(args.burst), rate=None)
        heights.settle(args.burst, 300)
        final_at = min(t for t, f, _ in heights.samples if f == heights.final)
        burst_rate = args.burst / (final_at - began)
        burst_ended_wall = heights.final_at[heights.final]
        rate = burst_rate / 2
        count = min(paced_n, int(rate * args.seconds))
        watched = {
            "validators": [p.pid for p in procs[:-1]],
            "projector": [procs[-1].pid],
            "postgres": [postgres.pid() or 0],
        }

        def cpu() -> dict[str, float]:
            return {
                k: sum(cpu_seconds(p) for p in [*v, *descendants(*v)]) for k, v in watched.items()
            }

        cpu_before = cpu()
        first_paced = heights.final + 1
        paced_began, paced_began_wall = time.monotonic(), time.time()
        send(
            producer,
            prefix + "tx",
            keys,
            signed,
            which=range(args.burst, args.burst + count),
            rate=rate,
        )
        paced_ended, paced_ended_wall = time.monotonic(), time.time()
        last_paced = heights.final
        used = {k: v - cpu_before[k] for k, v in cpu().items()}
        heights.settle(args.burst + count, 120)
        heights.stop.set()
        heights.join(10)
        heights.load_commit_times()
        burst_lag = heights.lag_time(began_wall, burst_ended_wall)
        print(
            f"live: {args.institutions} validators (nice 5) + projector; burst of {args.burst:,} "
            f"finalized at {burst_rate:,.0f} tx/s ({heights.final - start_height} blocks "
            f"in all); lag during the burst: max {max(burst_lag)} blocks"
        )
        print(
            f"lag behind finality at {rate:,.0f} tx/s (half the burst rate, blocks of up "
            f"to {args.block_txs} tx), {paced_ended - paced_began:.0f} s: "
            + describe_lag(heights.lag_time(paced_began_wall, paced_ended_wall))
        )
        print_per_block(heights, range(first_paced, last_paced + 1))
        wall = paced_ended - paced_began
        print(
            f"  CPU while paced ({wall:.1f} s wall, {2 * wall:.1f} core-s on 2 cores): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in used.items())
            + f"; projector {1e6 * used['projector'] / max(1, count):.0f} us per tx"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20000, help="catch-up transactions")
    parser.add_argument("--burst", type=int, default=10000, help="live burst transactions")
    parser.add_argument("--seconds", type=float, default=20.0, help="paced live run")
    parser.add_argument("--institutions", type=int, default=4)
    parser.add_argument("--block-txs", type=int, default=500)
    args = parser.parse_args()
    servers = private_servers("bench-proj-", postgres_options=["track_commit_timestamp=on"])
    with servers as (settings, _, postgres, work):
        catch_up(
            settings.bootstrap_servers, postgres.dsn("postgres"), work, args.txs, args.block_txs
        )
        live(settings.bootstrap_servers, postgres, work, args)


if __name__ == "__main__":
    main()
