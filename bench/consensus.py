"""Consensus throughput and finality latency on this machine, against a real broker.

Starts a private single-node Kafka, warms it up (``--warmup`` transactions through a chain
of the largest measured shape, the most institutions and operators, not measured: a fresh
broker spends several core-seconds compiling its hot paths, and a warm-up of one validator
left the paths of many consumers and of ``pantheon.feeds`` to be compiled during the
measured bursts, D64), then for 1 and for 4 institutions (one validator process each): a
burst of pre-signed transactions for throughput, and a paced run at half that rate for
latency (``--paced-seconds``, 5 s by default, and at least a quarter of the burst). Latency
is measured per transaction from its produce call to the first receipt for it on
``pantheon.receipts``. Also prints the single-core Ed25519 verify rate and the
ceiling ``verify rate x cores / validators`` (every validator verifies every signature; the
verify rate is measured before and after each case and the best is used), and the CPU
seconds each kind of process used during the burst.

With ``--operators 1,2`` every consortium size runs once per operator count (each operator
its own validator process, D38) and the ratio of each throughput to the one-operator figure
is printed.

    python -m bench.consensus [--txs 20000] [--institutions 1,4] [--operators 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.broker_cpu import GROUPS, BrokerThreads, difference
from bench.stages import STAGES, institutions_of, stages
from bench.traffic import per_tx, topic_traffic
from harness.stack_fixtures import private_settings
from infra.kafka_server import KafkaCluster
from infra.keystore import create_genesis
from infra.procs import descendants, read_pid, stop_all
from infra.settings import Settings
from ledger.keys import TX_DOMAIN, KeyPair, verify
from ledger.tx import parse_tx, sign_tx
from runtime.kafka_config import admin_config, consume_ready, consumer_config, producer_config
from runtime.topics import ensure_topics
from schemas.codec import decode


def verify_rate(seconds: float = 1.0) -> float:
    """Single-core Ed25519 verifications per second."""
    key = KeyPair.from_seed(bytes(32))
    message = b"x" * 200
    signature = key.sign(TX_DOMAIN, message)
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(200):
            verify(key.public_key, signature, TX_DOMAIN, message)
        count += 200
    return count / (time.perf_counter() - began)


class Receipts(threading.Thread):
    """Records when the first receipt of each tx id arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[bytes, float] = {}
        self.stop = False
        self.consumer = Consumer(consumer_config(bootstrap, f"bench-{time.time_ns()}"))
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def run(self) -> None:
        while not self.stop:
            for msg in consume_ready(self.consumer, 1000, 0.05):  # as the SDK reads (D22)
                if msg.error() is None:
                    _, rec = decode(msg.value() or b"", "Receipt")
                    self.seen.setdefault(rec["tx_id"], time.time())
        self.consumer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(
    validators: list[int], brokers: list[int], standbys: frozenset[int] = frozenset()
) -> dict[str, float]:
    """CPU seconds so far of the validators (with their workers), of those ranked first and
    of the ``standbys`` (D38) among them, of the brokers and of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)

    def of(pids: list[int]) -> float:
        return sum(cpu_seconds(p) for p in [*pids, *descendants(*pids)])

    return {
        "validators": of(validators),
        "primaries": of([p for p in validators if p not in standbys]),
        "standbys": of([p for p in validators if p in standbys]),
        "broker": sum(cpu_seconds(p) for p in brokers),
        "load generator": usage.ru_utime + usage.ru_stime,
    }


def host_cpu() -> tuple[float, float]:
    """The whole host's busy and total CPU time so far (``/proc/stat``, in ticks)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of the host's CPU time that was busy between two :func:`host_cpu` reads."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def wait_for(watcher: Receipts, ids: list[bytes], timeout: float) -> None:
    """Wait until ``watcher`` has seen a receipt for each of ``ids``, or ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(i in watcher.seen for i in ids):
        time.sleep(0.1)


@dataclass(frozen=True, slots=True)
class PhaseUse:
    """What a phase of a case cost (:class:`PhaseCpu`)."""

    wall: float  # seconds
    cpu: dict[str, float]  # CPU seconds of every :func:`cpu_snapshot` group
    broker_groups: dict[str, float]  # the brokers' CPU seconds by thread group (D64)
    host_busy: float  # the share of the whole host's CPU that was busy


class PhaseCpu:
    """Measures a phase of a case, from construction to :meth:`done`."""

    def __init__(
        self, pids: list[int], brokers: list[int], standbys: frozenset[int], threads: BrokerThreads
    ) -> None:
        self.pids, self.brokers, self.standbys, self.threads = pids, brokers, standbys, threads
        self.began = time.time()
        self.before = (cpu_snapshot(pids, brokers, standbys), threads.sample(), host_cpu())

    def done(self) -> PhaseUse:
        cpu, threads, host = self.before
        after = cpu_snapshot(self.pids, self.brokers, self.standbys)
        return PhaseUse(
            wall=time.time() - self.began,
            cpu={k: after[k] - cpu[k] for k in cpu},
            broker_groups=difference(threads, self.threads.sample()),
            host_busy=busy_share(host, host_cpu()),
        )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def spawn_validators(
    bootstrap: str,
    work: Path,
    net: Path,
    prefix: str,
    names: list[str],
    *,
    verify_workers: int = 0,
    niceness: int = 0,
    operators: int = 1,
    standby_niceness: int = 0,
) -> list[subprocess.Popen[bytes]]:
    """``operators`` validator processes per institution, quiet (each with
    ``verify_workers``); standbys (operators not ranked first, D38) get ``standby_niceness``
    more."""
    return [
        subprocess.Popen(
            [
                *(
                    ["nice", "-n", str(nice)]
                    if (nice := niceness + (standby_niceness if rank(net, n, k) else 0))
                    else []
                ),
                sys.executable,
                "-m",
                "streams.validator",
                "--genesis",
                str(net / "genesis.avro"),
                "--keystore",
                str(net / "keys" / f"{n}.json"),
                "--institution",
                n,
                "--operator",
                str(k),
                "--bootstrap",
                bootstrap,
                "--prefix",
                prefix,
                "--state-dir",
                str(work / prefix / f"{n}-{k}"),
                "--verify-workers",
                str(verify_workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in names
        for k in range(operators)
    ]


def rank(net: Path, institution: str, operator: int) -> int:
    """The rank of ``institution``'s operator number ``operator`` (its key id's position)."""
    doc = json.loads((net / "keys" / f"{institution}.json").read_text())
    ids = [op["key_id"] for op in doc["operators"]]
    return sorted(ids).index(ids[operator])


def presigned(
    net: Path, names: list[str], count: int
) -> tuple[list[KeyPair], list[bytes], list[bytes]]:
    """The institutions' keys, ``count`` signed AnchorData transactions and their ids."""
    keys = [
        KeyPair.from_seed(
            bytes.fromhex(
                json.loads((net / "keys" / f"{n}.json").read_text())["governance"]["seed"]
            )
        )
        for n in names
    ]
    signed = [
        sign_tx(
            keys[i % len(keys)],
            chain_id="bench",
            nonce=i // len(keys),
            operation="AnchorData",
            args={"data_id": f"d{i}", "sha256": bytes(32), "metadata": "bench"},
        )
        for i in range(count)
    ]
    return keys, signed, [parse_tx(raw).tx_id for raw in signed]


def send(
    producer: Producer,
    topic: str,
    keys: list[KeyPair],
    signed: list[bytes],
    *,
    which: range,
    rate: float | None,
    on_send: Callable[[int], None] | None = None,
) -> None:
    """Produce ``signed[i]`` for ``i`` in ``which`` (the i-th was signed by
    ``keys[i % len(keys)]``), at ``rate`` per second or at once; ``on_send(i)`` just before."""
    began = time.monotonic()
    for n, i in enumerate(which):
        if rate is not None:
            delay = began + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if on_send is not None:
            on_send(i)
        producer.produce(topic, key=keys[i % len(keys)].key_id, value=signed[i])
        producer.poll(0)
    producer.flush(60)


def sent_at(ids: list[bytes], sent: dict[bytes, float]) -> Callable[[int], None]:
    """An ``on_send`` that records when each transaction id was sent."""

    def record(i: int) -> None:
        sent[ids[i]] = time.time()  # wall clock: compared with broker append times

    return record


def latencies(ids: list[bytes], sent: dict[bytes, float], seen: dict[bytes, float]) -> list[float]:
    """Seconds from sending to the first receipt, for each of ``ids`` that has one."""
    return [seen[t] - sent[t] for t in ids if t in seen]


def wait_ready(state_root: Path, count: int, timeout: float = 120.0) -> None:
    """Wait until ``count`` validators under ``state_root`` wrote their first status (their
    consumers are assigned), then a little more."""
    deadline = time.monotonic() + timeout
    while len(list(state_root.glob("*/status.json"))) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)


def settled(state_root: Path, count: int, timeout: float = 30.0) -> None:
    """Wait until the ``count`` validators under ``state_root`` report one final height (a
    standby may finish applying the burst after the last receipt), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heights = set()
        for path in state_root.glob("*/status.json"):
            try:
                heights.add(json.loads(path.read_text())["final_height"])
            except (OSError, ValueError, KeyError):
                heights.add(-1)  # being replaced: read it again
        if len(heights) == 1 and len(list(state_root.glob("*/status.json"))) == count:
            return
        time.sleep(0.1)


def run_case(
    bootstrap: str,
    work: Path,
    institutions: int,
    txs: int,
    *,
    brokers: list[int],
    workers: int,
    operators: int = 1,
    standby_niceness: int = 0,
    block_interval_ms: int = 100,
    paced_seconds: float = 0.0,
    details: dict[str, Any] | None = None,
    data_dirs: list[Path] | None = None,
) -> dict[str, Any]:
    """One case; with ``details``, also fill it with the paced transactions' stages
    (``bench.stages``) and each validator's status file (GC pauses, snapshot time)."""
    names = [f"inst-{i + 1}" for i in range(institutions)]
    prefix = f"bench{institutions}x{operators}-{time.time_ns()}."
    net = work / f"net-{prefix}"
    create_genesis(
        net,
        "bench",
        names,
        operators_per_institution=operators,
        block_interval_ms=block_interval_ms,
        max_block_txs=500,
    )
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix)
    procs = spawn_validators(
        bootstrap,
        work,
        net,
        prefix,
        names,
        verify_workers=workers,
        operators=operators,
        standby_niceness=standby_niceness,
    )
    try:
        # the paced run: ``txs // 4`` transactions, or ``paced_seconds`` at half the burst's
        # rate if that is more (signed ahead for a rate of up to 8,000 tx/s)
        burst_n, short_n = txs, txs // 4
        signed_n = max(short_n, int(paced_seconds * 8000))
        keys, signed, ids = presigned(net, names, burst_n + signed_n)
        watcher = Receipts(bootstrap, prefix + "receipts")
        watcher.start()
        producer = Producer(producer_config(bootstrap))
        sent: dict[bytes, float] = {}

        wait_ready(work / prefix, len(procs))  # 8 processes start slowly on a busy host
        pids = [p.pid for p in procs]
        where = [(n, k) for n in names for k in range(operators)]  # spawn_validators' order
        standbys = frozenset(
            p.pid for p, (n, k) in zip(procs, where, strict=True) if rank(net, n, k)
        )
        topics = ("tx", "votes", "blocks", "receipts", "feeds")
        traffic_before = topic_traffic(bootstrap, data_dirs or [], prefix, topics)
        broker_threads = BrokerThreads(brokers)
        burst_cpu = PhaseCpu(pids, brokers, standbys, broker_threads)
        began = time.time()
        send(
            producer,
            prefix + "tx",
            keys,
            signed,
            which=range(burst_n),
            rate=None,
            on_send=sent_at(ids, sent),
        )
        wait_for(watcher, ids[:burst_n], 300)
        last = max(watcher.seen.get(ids[i], began) for i in range(burst_n))
        settled(work / prefix, len(procs))  # the CPU of every validator's share of the burst
        burst = burst_cpu.done()
        throughput = burst_n / (last - began)
        paced_n = min(signed_n, max(short_n, int(paced_seconds * throughput / 2)))
        paced_cpu = PhaseCpu(pids, brokers, standbys, broker_threads)
        send(
            producer,
            prefix + "tx",
            keys,
            signed,
            which=range(burst_n, burst_n + paced_n),
            rate=throughput / 2,
            on_send=sent_at(ids, sent),
        )
        wait_for(watcher, ids[burst_n : burst_n + paced_n], 300)
        paced = paced_cpu.done()
        paced_ids = ids[burst_n : burst_n + paced_n]
        lat = latencies(paced_ids, sent, watcher.seen)
        watcher.stop = True
        watcher.join(5)
        time.sleep(1)  # the slower validators' copies, votes and offsets land
        if details is not None:
            owners = institutions_of(net, names)
            details["stages"] = stages(
                bootstrap, prefix, owners=owners, sent=sent, seen=watcher.seen, ids=paced_ids
            )
            time.sleep(0.6)  # one more status write
            details["status"] = [
                json.loads(path.read_text())
                for path in sorted((work / prefix).glob("*/status.json"))
            ]
        return {
            "throughput": throughput,
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "p99 first": percentile(latencies(paced_ids[:short_n], sent, watcher.seen), 99),
            "paced_n": paced_n,
            "short_n": short_n,
            "paced_rate": throughput / 2,
            "finalized": float(len(watcher.seen)),
            "wall": last - began,
            "traffic": per_tx(
                traffic_before,
                topic_traffic(bootstrap, data_dirs or [], prefix, topics),
                burst_n + paced_n,
            ),
            **{f"cpu {k}": v for k, v in burst.cpu.items()},
            "broker groups": burst.broker_groups,
            "paced": paced,
        }
    finally:
        stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--txs", type=int, default=20000, help="burst size")
    parser.add_argument(
        "--institutions", default="1,4", help="comma-separated consortium sizes to run"
    )
    parser.add_argument(
        "--operators",
        default="1",
        help="comma-separated operators per institution to run (validator processes each)",
    )
    parser.add_argument(
        "--standby-nice",
        type=int,
        default=0,
        help="run standby operators (not ranked first) at this niceness: on one shared host "
        "they then use spare CPU and vote late, as if each operator had a host (default 0)",
    )
    parser.add_argument(
        "--verify-workers",
        type=int,
        default=None,
        help="signature workers per validator (default: the cores each validator has to "
        "itself, cores // validators, when that is at least 2; else 0)",
    )
    parser.add_argument(
        "--block-interval",
        type=int,
        default=100,
        help="the measured chains' block interval in ms (genesis block_interval_ms; the "
        "cut stage of the paced latency waits up to this long, default 100)",
    )
    parser.add_argument(
        "--paced-seconds",
        type=float,
        default=5.0,
        help="length of the paced latency run at half the burst's rate, in seconds (at "
        "least --txs / 4 transactions; default 5: a p99 over a fraction of a second is "
        "decided by one pause of the host)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also print where the paced transactions' latency went (produce -> appended -> "
        "cut -> first vote -> quorum vote -> final block -> receipt, p50/p99 each, from the "
        "logs' broker append times) and the validators' GC pauses and snapshot times",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=10000,
        help="transactions through a chain of the largest measured shape first, not "
        "measured (a fresh broker spends several core-seconds compiling its hot paths)",
    )
    args = parser.parse_args()
    settings = private_settings()
    cluster = KafkaCluster(settings)
    cluster.start()
    try:
        brokers = [pid for node in cluster.nodes if (pid := read_pid(node.pid_file)) is not None]
        data_dirs = [node.data_dir for node in cluster.nodes]
        # This machine's speed drifts (shared host): the verify rate is measured before and
        # after every case, and the ceiling uses the best figure, so the ratio errs low.
        per_inst = [int(x) for x in args.operators.split(",")]
        sizes = [int(x) for x in args.institutions.split(",")]
        if args.warmup > 0:  # every path the measured cases use: many consumers, feeds (D64)
            run_case(
                settings.bootstrap_servers,
                settings.state_dir,
                max(sizes),
                args.warmup,
                brokers=brokers,
                workers=0,
                operators=max(per_inst),
            )
        rates = [verify_rate(2.0)]
        for n in sizes:
            by_ops: dict[int, tuple[float, float]] = {}
            for ops in per_inst:
                by_ops[ops] = report_case(
                    args, settings, brokers, rates, n=n, ops=ops, data_dirs=data_dirs
                )
            if len(by_ops) > 1:
                base, base_cpu = by_ops[per_inst[0]]
                print(
                    f"{n} institution(s), throughput by operators per institution: "
                    + ", ".join(
                        f"{ops}: {tput:,.0f} tx/s ({100 * tput / base:.0f}% of {per_inst[0]})"
                        for ops, (tput, _) in by_ops.items()
                    )
                )
                # what a CPU-bound machine would give: less sensitive to other load than tx/s
                print(
                    f"{n} institution(s), CPU per finalized tx of validators, broker and load "
                    "generator together: "
                    + ", ".join(
                        f"{ops}: {1e6 * cpu:,.0f} us ({100 * base_cpu / cpu:.0f}% of "
                        f"{per_inst[0]}'s throughput if CPU-bound)"
                        for ops, (_, cpu) in by_ops.items()
                    )
                )
    finally:
        cluster.stop()
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def report_case(
    args: argparse.Namespace,
    settings: Settings,
    brokers: list[int],
    rates: list[float],
    *,
    n: int,
    ops: int,
    data_dirs: list[Path],
) -> tuple[float, float]:
    """Run ``n`` institutions with ``ops`` operators each, print its figures, return its
    throughput and the CPU seconds per finalized tx of all its processes in the burst."""
    cores = os.cpu_count() or 1
    validators = n * ops
    workers = args.verify_workers
    if workers is None:
        workers = cores // validators if cores // validators >= 2 else 0
    details: dict[str, Any] | None = {} if args.breakdown else None
    r = run_case(
        settings.bootstrap_servers,
        settings.state_dir,
        n,
        args.txs,
        brokers=brokers,
        workers=workers,
        operators=ops,
        standby_niceness=args.standby_nice,
        block_interval_ms=args.block_interval,
        paced_seconds=args.paced_seconds,
        details=details,
        data_dirs=data_dirs,
    )
    rates.append(verify_rate(2.0))
    rate = max(rates[-2:])
    ceiling = rate * cores / validators
    print(
        f"{n} institution(s) x {ops} operator(s)"
        f"{f' (standbys at nice {args.standby_nice})' if ops > 1 and args.standby_nice else ''}: "
        f"finalized {r['throughput']:9,.0f} tx/s "
        f"({100 * r['throughput'] / ceiling:.0f}% of ceiling {ceiling:,.0f} = "
        f"{rate:,.0f} verifies/s x {cores} cores / {validators} validators; verify rate "
        f"before and after {rates[-2]:,.0f} / {rates[-1]:,.0f}; {workers} signature "
        "worker(s) per validator)"
    )
    print(
        f"  latency at {r['paced_rate']:,.0f} tx/s over {r['paced_n']:,} txs "
        f"({r['paced_n'] / r['paced_rate']:.1f} s): p50 {r['p50'] * 1000:.0f} ms, "
        f"p99 {r['p99'] * 1000:.0f} ms; over its first {r['short_n']:,} only (the window "
        f"before --paced-seconds) p99 {r['p99 first'] * 1000:.0f} ms"
    )
    paced: PhaseUse = r["paced"]
    used = {k: paced.cpu[k] for k in ("validators", "broker", "load generator")}
    others = max(0.0, paced.host_busy - sum(used.values()) / (cores * paced.wall))
    print(
        f"  CPU during the paced run ({paced.wall:.1f} s wall): validators "
        f"{used['validators']:.2f} s, broker {used['broker']:.2f} s (its JIT compiler "
        f"{paced.broker_groups['JIT compiler']:.2f} s), load generator "
        f"{used['load generator']:.2f} s; host busy {100 * paced.host_busy:.0f}% of {cores} "
        f"cores, of which other processes {100 * others:.0f}% (more than a few: the host was "
        "shared, D69)"
    )
    verify_cpu = validators * args.txs / rate
    print(
        f"  CPU during the burst ({r['wall']:.1f} s wall, {cores * r['wall']:.1f} core-s): "
        f"validators {r['cpu validators']:.1f} s (of which Ed25519 verify ~{verify_cpu:.1f}"
        f" s), broker {r['cpu broker']:.1f} s, load generator "
        f"{r['cpu load generator']:.1f} s"
    )
    finalized = validators * args.txs
    print(
        f"  validator CPU per finalized tx per validator "
        f"{1e6 * r['cpu validators'] / finalized:.0f} us = "
        f"{rate * r['cpu validators'] / finalized:.2f} x one verify ({1e6 / rate:.0f} us); "
        f"broker {1e6 * r['cpu broker'] / args.txs:.0f} us per tx"
    )
    groups = r["broker groups"]
    without_jit = r["cpu broker"] - groups["JIT compiler"]
    print(
        "  broker CPU by thread group: "
        + ", ".join(f"{g} {groups[g]:.2f} s" for g in GROUPS)
        + f"; without its JIT compiler {1e6 * without_jit / args.txs:.0f} us per tx"
    )
    if ops > 1:
        print(
            f"  validator CPU per finalized tx by role: primary (ranked first) "
            f"{1e6 * r['cpu primaries'] / (n * args.txs):.0f} us, standby "
            f"{1e6 * r['cpu standbys'] / ((validators - n) * args.txs):.0f} us"
        )
    print(f"  Kafka messages / bytes per tx by topic (whole case): {r['traffic']}")
    if details is not None:
        print_details(details)
    used = r["cpu validators"] + r["cpu broker"] + r["cpu load generator"]
    return float(r["throughput"]), used / args.txs


def print_details(details: dict[str, Any]) -> None:
    """The stage breakdown and the validators' pauses (``--breakdown``)."""
    found: dict[str, list[float]] = details["stages"]
    counted = len(found[STAGES[0]])
    print(f"  where the paced latency went ({counted} txs; ms, p50 / p99 / max):")
    for name in STAGES:
        values = found[name]
        if values:
            print(
                f"    {name:12} {1000 * percentile(values, 50):7.1f} "
                f"{1000 * percentile(values, 99):7.1f} {1000 * max(values):7.1f}"
            )
    for status in details["status"]:
        gc_stats = status.get("gc", {})
        print(
            f"  {status['institution']}/{status['operator']}: GC pauses by generation "
            f"{gc_stats.get('count')} (total ms {gc_stats.get('total_ms')}, max ms "
            f"{gc_stats.get('max_ms')}, of CPU {gc_stats.get('max_cpu_ms')}); snapshots: "
            "longest stall of the loop "
            f"{status.get('snapshot_stall_ms_max')} ms, longest from begun to stored "
            f"{status.get('snapshot_write_ms_max')} ms"
        )


if __name__ == "__main__":
    main()
