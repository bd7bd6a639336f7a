"""The Layer-2 batcher of one institution (``pantheon batcher``): device records to CommitBatch.

``python -m readers.batcher --institution X --keystore K --genesis G --bootstrap B --dsn DSN``

Theory of operation
-------------------
* A consumer group (``pantheon-batcher-<institution>``) shares the partitions of
  ``<prefix>l2.records``; each process batches the partitions it is assigned. Kafka's group is
  used for assignment only: positions live in Postgres (``l2.positions``) and are loaded on
  every assignment; nothing is ever committed to Kafka.
* Each message is parsed (:func:`ledger.l2.parse_l2`), its device looked up in the chain
  projection (``chain.keys``), its Ed25519 signature verified in parallel
  (:class:`Verifier`: a thread pool, since the verifier releases the GIL while verifying;
  ``bench/l2.py`` measures threads against processes), then admitted in log order
  (:func:`ledger.l2.admit`): unknown or revoked device, bad signature or replayed sequence
  goes to the rejected outbox with its reason. Devices of other institutions are skipped
  (their institution's batcher anchors them).
* A window per partition closes after ``max_records`` messages or ``window_ms`` since its
  first message. Closing builds the RFC 6962 tree with :mod:`ledger.merkle` and calls
  :func:`projections.l2.seal`: batch, leaves, device sequences, rejected messages and the new
  position in ONE Postgres transaction. A crash before it loses nothing (the window is
  re-read); after it, nothing is read twice.
* A committer thread submits a ``CommitBatch`` for every sealed batch, oldest first, with the
  deterministic batch id of :func:`ledger.l2.batch_id`; a receipt OK or ``ALREADY_EXISTS``
  (an earlier attempt, before a crash, got there first) marks the batch committed. Nonces:
  read from ``chain.keys.next_nonce`` once the projection has reached the height of every
  receipt seen, then counted locally; any non-OK receipt or a timeout makes it re-read
  (``BAD_NONCE`` recovery); with a re-read nonce, sealed batches the chain projection
  already holds (committed by a killed process whose receipts were never seen) are marked
  committed instead of being sent again. The same thread publishes the rejected outbox to
  ``<prefix>l2.rejected`` (at least once; consumers dedupe on topic/partition/offset).
* The signing key must be a SERVICE identity of the institution (or, for the local demo, its
  governance key): both may send ``CommitBatch``. Each process of the group commits the sealed
  batches of the partitions it holds (a new owner re-submits what the old one left), and
  needs its own key: two processes signing with one key would race for its nonces.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Counter, Gauge
from psycopg.conninfo import make_conninfo

from ledger.errors import DecodeError
from ledger.genesis import Genesis
from ledger.keys import KeyPair, verify_batch
from ledger.l2 import RECORD_KIND, DeviceInfo, Parsed, Reason, admit, batch_id, parse_l2
from ledger.merkle import root
from ledger.results import ResultCode
from projections import l2 as store
from projections import read
from runtime import logs
from runtime.cli_args import Parser
from runtime.kafka_config import admin_config, consumer_config, producer_config
from runtime.metrics_server import serve_metrics
from runtime.topics import DEFAULT_PREFIX, L2_PARTITIONS, ledger_config, wait_visible
from schemas.codec import encode
from streams.receipts import ReceiptTimeout
from streams.sdk import LedgerClient, SubmitError
from streams.signature_pipeline import worker_pool

log = logging.getLogger("pantheon.batcher")

RECORDS = Counter("pantheon_l2_records", "Readings accepted into sealed batches", ["institution"])
REJECTED = Counter("pantheon_l2_rejected", "Messages rejected", ["institution", "reason"])
BATCHES = Counter("pantheon_l2_batches", "Batches sealed", ["institution"])
COMMITTED = Counter("pantheon_l2_batches_committed", "Batches committed", ["institution"])
BATCH_SIZE = Gauge("pantheon_l2_last_batch_leaves", "Leaves of the last batch", ["institution"])

EXIT_OK, EXIT_CONFIG = 0, 2
_CHUNK = 512


def records_topic(prefix: str) -> str:
    """``<prefix>l2.records``."""
    return f"{prefix}l2.records"


def rejected_topic(prefix: str) -> str:
    """``<prefix>l2.rejected``."""
    return f"{prefix}l2.rejected"


def ensure_rejected_topic(bootstrap: str, prefix: str, timeout: float = 30.0) -> None:
    """Create ``<prefix>l2.rejected`` with the ledger topic settings if it is missing."""
    admin = AdminClient(admin_config(bootstrap))
    name = rejected_topic(prefix)
    metadata = admin.list_topics(timeout=timeout)
    if name not in metadata.topics:
        replication = 3 if len(metadata.brokers) >= 3 else 1
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=L2_PARTITIONS,
                    replication_factor=replication,
                    config=ledger_config(replication),
                )
            ],
            operation_timeout=timeout,
        )
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    wait_visible(admin, [name], timeout=timeout)


# -- parallel signature verification ----------------------------------------------------------

Job = tuple[bytes, bytes, bytes]  # public key, signature, signed message


def _verify_chunk(jobs: Sequence[Job]) -> list[bool]:
    # ledger.keys.verify_batch: one batch equation with the compiled extension, same answers
    return verify_batch(jobs, domain=b"")


class Verifier:
    """Ed25519 verification of many (public key, signature, message) jobs across cores."""

    def __init__(self, workers: int | None = None, *, processes: bool = False) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.processes = processes
        self._pool: Executor | None = None
        if self.workers > 1:
            self._pool = (
                worker_pool(self.workers)
                if processes
                else ThreadPoolExecutor(self.workers, thread_name_prefix="verify")
            )

    def verify(self, jobs: Sequence[Job]) -> list[bool]:
        """One boolean per job, in order."""
        return self.submit(jobs)()

    def submit(self, jobs: Sequence[Job]) -> Callable[[], list[bool]]:
        """Start verifying ``jobs`` in the background; call the result to wait for them."""
        if self._pool is None or len(jobs) < 2 * _CHUNK:
            done = _verify_chunk(jobs)
            return lambda: done
        size = max(_CHUNK, -(-len(jobs) // (self.workers * 4)))
        pool = self._pool
        futures = [
            pool.submit(_verify_chunk, jobs[i : i + size]) for i in range(0, len(jobs), size)
        ]

        def results() -> list[bool]:
            out: list[bool] = []
            for future in futures:
                out.extend(future.result())
            return out

        return results

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# -- the batcher ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BatcherConfig:
    """Everything a batcher process needs."""

    institution: str
    key: KeyPair
    chain_id: str
    genesis: Genesis  # the trust anchor of CommitBatch outcomes (decisions D22)
    bootstrap: str
    dsn: str  # the institution's database (chain projection + l2 tables)
    prefix: str = DEFAULT_PREFIX
    group: str = ""
    max_records: int = 5000
    window_ms: int = 1000
    verify_workers: int | None = None
    verify_processes: bool = False
    receipt_timeout: float = 60.0
    instance_id: str = ""  # static group membership: a restart takes its partitions back at once

    @property
    def consumer(self) -> str:
        """The consumer group, also the owner name of positions and batches."""
        return self.group or f"pantheon-batcher-{self.institution}"


@dataclass(slots=True)
class _Poll:
    """Messages of one poll, parsed, with their signature checks under way."""

    msgs: list[Message]
    parsed: list[Parsed | None]
    job_of: list[int]
    devices: dict[bytes, DeviceInfo]
    results: Callable[[], list[bool]]


@dataclass(slots=True)
class _Window:
    partition: int
    start: int  # stored next offset when the window opened
    next: int  # next offset expected
    opened: float = 0.0
    messages: int = 0
    records: int = 0
    ts_low: int = 1 << 62
    ts_high: int = 0
    leaves: list[store.Leaf] = field(default_factory=list)
    rejected: list[store.Rejected] = field(default_factory=list)
    sequences: dict[bytes, int] = field(default_factory=dict)


class Batcher:
    """Consumes device messages, seals batches and commits their roots (module docstring)."""

    def __init__(self, config: BatcherConfig) -> None:
        self.config = config
        self.topic = records_topic(config.prefix)
        self.verifier = Verifier(config.verify_workers, processes=config.verify_processes)
        self._conn: psycopg.Connection[Any] | None = None
        self._consumer: Consumer | None = None
        self._windows: dict[int, _Window] = {}
        self._read_next: dict[int, int] = {}  # next offset to dispatch, per partition
        self._inflight: _Poll | None = None
        self._owned: frozenset[int] = frozenset()  # partitions held (read by the committer)
        self._sequences: dict[bytes, int] = {}
        self._devices: dict[bytes, DeviceInfo] = {}
        self._devices_at = 0.0
        self._sealed = threading.Event()
        self.records = 0
        self.rejected: dict[str, int] = {}
        self.batches = 0
        self.committed = 0
        self.failure: BaseException | None = None
        self.assigned_at: float | None = None  # monotonic time of the first assignment

    # -- setup ------------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.config.dsn, autocommit=True, connect_timeout=10)
        return self._conn

    def prepare(self) -> None:
        """Migrations and the rejected topic (idempotent)."""
        store.migrate(self._connection())
        ensure_rejected_topic(self.config.bootstrap, self.config.prefix)

    def _kafka(self) -> Consumer:
        if self._consumer is None:
            extra: dict[str, Any] = {
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
            if self.config.instance_id:
                extra["group.instance.id"] = self.config.instance_id
            consumer = Consumer(
                consumer_config(self.config.bootstrap, self.config.consumer, **extra)
            )
            consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._consumer = consumer
        return self._consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        conn = self._connection()
        positions = store.load_positions(
            conn, self.config.consumer, self.topic, [p.partition for p in partitions]
        )
        self._sequences = store.load_sequences(conn)
        self._inflight = None
        for p in partitions:
            p.offset = positions[p.partition]
            self._read_next[p.partition] = p.offset
            self._windows[p.partition] = _Window(
                partition=p.partition, start=p.offset, next=p.offset
            )
        consumer.assign(partitions)
        self._owned = frozenset(p.partition for p in partitions)
        if self.assigned_at is None:
            self.assigned_at = time.monotonic()
        log.info("assigned", extra={"positions": str(positions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._inflight = None
        self._owned = frozenset()
        for p in partitions:  # open windows are dropped: the next owner re-reads them
            self._windows.pop(p.partition, None)
            self._read_next.pop(p.partition, None)
        consumer.unassign()

    def _refresh_devices(self, force: bool = False) -> None:
        now = time.monotonic()
        if force and now - self._devices_at < 0.5:
            return
        if force or now - self._devices_at > 5.0:
            self._devices = store.load_devices(self._connection())
            self._devices_at = now

    # -- one poll ---------------------------------------------------------------------------
    def step(self, timeout: float = 0.1, max_messages: int = 20000) -> int:
        """Consume one poll and start verifying it; meanwhile admit the previous poll (whose
        signatures were verified in the background) and seal due windows. Returns the number
        of new messages."""
        consumer = self._kafka()
        msgs = consumer.consume(
            num_messages=max_messages, timeout=timeout if self._inflight is None else 0
        )
        fresh: list[Message] = []
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": str(error)})
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            read = self._read_next.get(partition)
            if read is not None and offset >= read:
                fresh.append(msg)
                self._read_next[partition] = offset + 1
        current = self._dispatch(fresh) if fresh else None
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            self._admit(inflight)
        self._inflight = current
        self._seal_due()
        return len(fresh)

    def _dispatch(self, msgs: list[Message]) -> _Poll:
        self._refresh_devices()
        parsed: list[Parsed | None] = []
        for msg in msgs:
            try:
                parsed.append(parse_l2(msg.value() or b""))
            except DecodeError:
                parsed.append(None)
        if any(p is not None and p.device_key_id not in self._devices for p in parsed):
            self._refresh_devices(force=True)
        devices = self._devices
        jobs: list[Job] = []
        job_of: list[int] = []
        for p in parsed:
            info = devices.get(p.device_key_id) if p is not None else None
            if p is not None and info is not None and info.active:
                job_of.append(len(jobs))
                jobs.append((info.public_key, p.signature, p.signed))
            else:
                job_of.append(-1)
        return _Poll(msgs, parsed, job_of, devices, self.verifier.submit(jobs))

    def _admit(self, poll: _Poll) -> None:
        msgs, parsed, job_of, devices = poll.msgs, poll.parsed, poll.job_of, poll.devices
        results = poll.results()
        now = time.monotonic()
        mine = self.config.institution
        for msg, p, j in zip(msgs, parsed, job_of, strict=True):
            offset = msg.offset() or 0
            window = self._windows.get(msg.partition() or 0)
            if window is None or offset < window.next:
                continue
            if window.messages == 0:
                window.opened = now
            window.next = offset + 1
            window.messages += 1
            ts = msg.timestamp()[1]
            window.ts_low, window.ts_high = min(window.ts_low, ts), max(window.ts_high, ts)
            if p is None:
                self._reject(window, offset, Reason.MALFORMED, b"", -1, msg.value() or b"")
                continue
            info = devices.get(p.device_key_id)
            if info is not None and info.institution_id != mine:
                continue  # another institution's device: its own batcher anchors it
            kid = p.device_key_id
            last = window.sequences.get(kid, self._sequences.get(kid))
            reason = admit(p, info, j >= 0 and results[j], last)
            if reason is not None:
                self._reject(window, offset, reason, kid, p.first_sequence, msg.value() or b"")
                continue
            window.sequences[kid] = p.last_sequence
            window.records += p.count
            window.leaves.append(
                store.Leaf(
                    device_key_id=kid,
                    first_sequence=p.first_sequence,
                    last_sequence=p.last_sequence,
                    kind=0 if p.kind == RECORD_KIND else 1,
                    leaf=p.leaf,
                )
            )
            if window.messages >= self.config.max_records:
                self._seal(window)

    @staticmethod
    def _reject(  # noqa: PLR0917 (one rejected message, field by field)
        window: _Window, offset: int, reason: Reason, kid: bytes, seq: int, raw: bytes
    ) -> None:
        window.rejected.append(
            store.Rejected(
                offset=offset, reason=reason.value, device_key_id=kid, sequence=seq, raw=raw
            )
        )

    def _seal_due(self) -> None:
        deadline = time.monotonic() - self.config.window_ms / 1000
        for window in list(self._windows.values()):
            if window.messages and window.opened <= deadline:
                self._seal(window)

    def _seal(self, window: _Window) -> None:
        cfg = self.config
        batch = None
        if window.leaves:
            batch = store.Batch(
                batch_id=batch_id(
                    cfg.institution, self.topic, window.partition, window.start, window.next - 1
                ),
                topic=self.topic,
                partition=window.partition,
                first_offset=window.start,
                last_offset=window.next - 1,
                merkle_root=root([leaf.leaf for leaf in window.leaves]),
                leaf_count=len(window.leaves),
                record_count=window.records,
                window_start_ms=window.ts_low,
                window_end_ms=max(window.ts_low, window.ts_high),
            )
        store.seal(
            self._connection(),
            consumer=cfg.consumer,
            topic=self.topic,
            partition=window.partition,
            old_next=window.start,
            new_next=window.next,
            batch=batch,
            leaves=window.leaves,
            sequences=window.sequences,
            rejected=window.rejected,
        )
        self._sequences.update(window.sequences)
        self.records += window.records
        RECORDS.labels(cfg.institution).inc(window.records)
        for r in window.rejected:
            self.rejected[r.reason] = self.rejected.get(r.reason, 0) + 1
            REJECTED.labels(cfg.institution, r.reason).inc()
        if batch is not None:
            self.batches += 1
            BATCHES.labels(cfg.institution).inc()
            BATCH_SIZE.labels(cfg.institution).set(batch.leaf_count)
        self._windows[window.partition] = _Window(
            partition=window.partition, start=window.next, next=window.next
        )
        self._sealed.set()

    # -- committing ---------------------------------------------------------------------------
    def commit_loop(self, stop: threading.Event) -> None:
        """Submit CommitBatch for sealed batches and publish rejected messages until ``stop``."""
        cfg = self.config
        conn = psycopg.connect(cfg.dsn, autocommit=True, connect_timeout=10)
        producer = Producer(producer_config(cfg.bootstrap))
        client = LedgerClient(
            cfg.bootstrap,
            cfg.key,
            cfg.chain_id,
            prefix=cfg.prefix,
            genesis=cfg.genesis,
            validator_sets=read.validator_set_source(cfg.dsn),
        )
        nonce_known, need_height, backoff = False, 0, 0.2
        try:
            while not stop.is_set():
                self._publish_rejected(conn, producer)
                # a partition's sealed batches are committed by the process that holds it
                pending = store.pending_batches(conn, cfg.consumer, self._owned)
                if not pending:
                    self._sealed.wait(0.2)
                    self._sealed.clear()
                    continue
                if not nonce_known:
                    nonce = self._chain_nonce(conn, need_height, stop)
                    if nonce is None:
                        continue
                    client.reset_nonce(nonce)
                    nonce_known = True
                    # read with the nonce, from the same projection: batches a killed
                    # process committed (its receipts never seen here) are not sent again
                    pending = self._skip_landed(conn, pending)
                    if not pending:
                        continue
                ok, height = self._submit(conn, client, pending)
                need_height = max(need_height, height)
                if not ok:
                    nonce_known = False
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                else:
                    backoff = 0.2
        except BaseException as exc:
            self.failure = exc
            log.exception("committer failed")
            raise
        finally:
            try:
                client.close()
            except SubmitError:
                log.warning("undelivered CommitBatch transactions at close (resubmitted later)")
            producer.flush(10)
            conn.close()

    def _skip_landed(
        self, conn: psycopg.Connection[Any], pending: list[store.Batch]
    ) -> list[store.Batch]:
        landed = store.on_chain(conn, [b.batch_id for b in pending])
        for b in pending:
            if b.batch_id in landed:
                store.mark_committed(conn, b.batch_id, None, int(ResultCode.ALREADY_EXISTS))
                self.committed += 1
                COMMITTED.labels(self.config.institution).inc()
        if landed:
            log.info("%d sealed batches were already on chain (an earlier try)", len(landed))
        return [b for b in pending if b.batch_id not in landed]

    def _chain_nonce(
        self, conn: psycopg.Connection[Any], height: int, stop: threading.Event
    ) -> int | None:
        if store.projected_height(conn) < height:
            stop.wait(0.1)
            return None
        key = store.chain_key(conn, self.config.key.key_id)
        if key is None or not key[2] or key[1] != self.config.institution:
            log.error(
                "the batcher key is not an active key of %s on chain (yet)", self.config.institution
            )
            stop.wait(1.0)
            return None
        return key[3]

    def _submit(
        self, conn: psycopg.Connection[Any], client: LedgerClient, pending: list[store.Batch]
    ) -> tuple[bool, int]:
        sent = [(b, client.submit("CommitBatch", b.commit_args())) for b in pending]
        try:
            client.flush(30)
        except SubmitError as exc:
            log.warning("CommitBatch delivery failed: %s", exc)
            return False, 0
        ok, height = True, 0
        codes: dict[str, int] = {}
        started = time.monotonic()
        deadline = started + self.config.receipt_timeout
        for b, tx_id in sent:
            try:
                receipt = client.wait_receipt(tx_id, max(0.1, deadline - time.monotonic()))
            except ReceiptTimeout:
                log.warning("no receipt for batch %s; will resubmit", b.batch_id)
                return False, height
            height = max(height, receipt.height)
            codes[receipt.code.name] = codes.get(receipt.code.name, 0) + 1
            if receipt.code in (ResultCode.OK, ResultCode.ALREADY_EXISTS):
                store.mark_committed(conn, b.batch_id, tx_id, int(receipt.code))
                self.committed += 1
                COMMITTED.labels(self.config.institution).inc()
            if receipt.code is not ResultCode.OK:
                if receipt.code not in (ResultCode.ALREADY_EXISTS, ResultCode.BAD_NONCE):
                    log.error("CommitBatch %s rejected: %s", b.batch_id, receipt.code.name)
                ok = False
        log.info(
            "submitted %d CommitBatch from nonce %d: %s in %.2fs",
            len(sent),
            client.next_nonce - len(sent),
            codes,
            time.monotonic() - started,
        )
        return ok, height

    def _publish_rejected(self, conn: psycopg.Connection[Any], producer: Producer) -> None:
        rows = store.unpublished_rejected(conn)
        if not rows:
            return
        target = rejected_topic(self.config.prefix)
        for topic, partition, r in rows:
            record = {
                "topic": topic,
                "partition": partition,
                "offset": r.offset,
                "reason": r.reason,
                "device_key_id": r.device_key_id,
                "sequence": r.sequence,
                "raw": r.raw,
            }
            value = encode("L2Rejected", record)
            while True:
                try:
                    producer.produce(
                        target,
                        key=r.device_key_id or None,
                        value=value,
                        headers={"reason": r.reason.encode()},
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        if producer.flush(30) == 0:
            store.mark_published(conn, [(t, p, r.offset) for t, p, r in rows])

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Batch until ``stop`` is set (the committer runs in a thread beside)."""
        self.prepare()
        committer = threading.Thread(target=self.commit_loop, args=(stop,), name="committer")
        committer.start()
        try:
            while not stop.is_set():
                if self.failure is not None:
                    raise RuntimeError("committer failed") from self.failure
                try:
                    self.step()
                except store.PositionConflict as exc:
                    log.warning("position conflict, reloading: %s", exc)
                    self._reload()
        finally:
            stop.set()
            committer.join()
            self.close()

    def _reload(self) -> None:
        consumer = self._kafka()
        assigned = consumer.assignment()
        self._windows.clear()
        self._read_next.clear()
        self._inflight = None
        if assigned:
            self._on_assign(consumer, [TopicPartition(p.topic, p.partition) for p in assigned])

    def close(self) -> None:
        """Leave the group, stop the verifiers, close the connection."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.verifier.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- command line ---------------------------------------------------------------------------------


def load_signing_key(keystore: Path | None, key_file: Path | None) -> KeyPair:
    """The batcher's key: a key file (a SERVICE identity) or the keystore's governance key."""
    path = key_file or keystore
    if path is None:
        raise ValueError("give --key (a SERVICE identity) or --keystore (governance key)")
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is readable by others; chmod 600")
    doc = json.loads(path.read_text())
    seed = doc["seed"] if key_file is not None else doc["governance"]["seed"]
    return KeyPair.from_seed(bytes.fromhex(seed))


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``pantheon batcher``."""
    p = Parser(prog="pantheon batcher", description=__doc__.split("\n")[0])
    p.add_argument("--institution", required=True)
    p.add_argument("--genesis", type=Path, required=True, help="genesis.avro (chain id)")
    p.add_argument("--keystore", type=Path, help="institution keystore (governance key)")
    p.add_argument("--key", type=Path, help="key file of a SERVICE identity (preferred)")
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--dsn", required=True, help="PostgreSQL server (password via PGPASSWORD)")
    p.add_argument("--dbname", help="database (default pantheon_<institution>)")
    p.add_argument("--group", default="")
    p.add_argument(
        "--instance-id",
        default="",
        help="static group member id, stable across restarts of this process (one per process)",
    )
    p.add_argument("--max-records", type=int, default=5000)
    p.add_argument("--window-ms", type=int, default=1000)
    p.add_argument("--workers", type=int, default=None, help="signature verify workers")
    p.add_argument("--processes", action="store_true", help="verify in processes, not threads")
    p.add_argument("--metrics-port", type=int)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> BatcherConfig:
    """A :class:`BatcherConfig` from parsed arguments."""
    genesis = Genesis.decode(args.genesis.read_bytes())
    dbname = args.dbname or "pantheon_" + args.institution.replace("-", "_")
    return BatcherConfig(
        institution=args.institution,
        key=load_signing_key(args.keystore, args.key),
        chain_id=genesis.params.chain_id,
        genesis=genesis,
        bootstrap=args.bootstrap,
        dsn=make_conninfo(args.dsn, dbname=dbname),
        prefix=args.prefix,
        group=args.group,
        max_records=args.max_records,
        window_ms=args.window_ms,
        verify_workers=args.workers,
        verify_processes=args.processes,
        instance_id=args.instance_id,
    )


def export_at_zero(institution: str) -> None:
    """Every series of the batcher's counters, at 0 until its first event: a dashboard panel
    shows 0, not nothing, and a rate over them is defined from the start."""
    for counter in (RECORDS, BATCHES, COMMITTED):
        counter.labels(institution)
    for reason in Reason:
        REJECTED.labels(institution, reason.value)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m readers.batcher`` (wire as ``pantheon batcher``)."""
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    try:
        config = config_from_args(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"pantheon batcher: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.metrics_port:
        serve_metrics(args.metrics_port)
    export_at_zero(config.institution)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Batcher(config).run(stop)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
