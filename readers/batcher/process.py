"""The batcher process: consume device messages, verify and admit them into windows, seal
each window's batch and position in one transaction; the committer runs beside it
(module docstring of :mod:`readers.batcher`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from ledger.errors import DecodeError
from ledger.l2 import DeviceInfo, Parsed, Reason, admit, parse_l2
from projections import l2 as store
from readers.batcher.committer import Committer, ensure_rejected_topic
from readers.batcher.config import BatcherConfig, records_topic
from readers.batcher.metrics import BATCH_SIZE, BATCHES, RECORDS, REJECTED
from readers.batcher.verify import Job, Verifier
from readers.batcher.window import Window
from runtime.kafka_config import consumer_config

log = logging.getLogger("pantheon.batcher")


@dataclass(slots=True)
class _Poll:
    """Messages of one poll, parsed, with their signature checks under way."""

    msgs: list[Message]
    parsed: list[Parsed | None]
    job_of: list[int]
    devices: dict[bytes, DeviceInfo]
    results: Callable[[], list[bool]]


class Batcher:
    """Consumes device messages, seals batches and commits their roots (module docstring)."""

    def __init__(self, config: BatcherConfig) -> None:
        self.config = config
        self.topic = records_topic(config.prefix)
        self.verifier = Verifier(config.verify_workers, processes=config.verify_processes)
        self._conn: psycopg.Connection[Any] | None = None
        self._consumer: Consumer | None = None
        self._windows: dict[int, Window] = {}
        self._read_next: dict[int, int] = {}  # next offset to dispatch, per partition
        self._inflight: _Poll | None = None
        self._owned: frozenset[int] = frozenset()  # partitions held (read by the committer)
        self._sequences: dict[bytes, int] = {}
        self._devices: dict[bytes, DeviceInfo] = {}
        self._devices_at = 0.0
        self._sealed = threading.Event()
        self.committer = Committer(config, lambda: self._owned, self._sealed)
        self.records = 0
        self.rejected: dict[str, int] = {}
        self.batches = 0
        self.assigned_at: float | None = None  # monotonic time of the first assignment

    @property
    def committed(self) -> int:
        """Batches marked committed by this process's committer."""
        return self.committer.committed

    @property
    def failure(self) -> BaseException | None:
        """Why the committer thread stopped, if it failed."""
        return self.committer.failure

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
            self._windows[p.partition] = Window(
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
            window.take(offset, msg.timestamp()[1], now)
            if p is None:
                window.reject(offset, Reason.MALFORMED, b"", -1, msg.value() or b"")
                continue
            info = devices.get(p.device_key_id)
            if info is not None and info.institution_id != mine:
                continue  # another institution's device: its own batcher anchors it
            kid = p.device_key_id
            last = window.sequences.get(kid, self._sequences.get(kid))
            reason = admit(p, info, j >= 0 and results[j], last)
            if reason is not None:
                window.reject(offset, reason, kid, p.first_sequence, msg.value() or b"")
                continue
            window.accept(p)
            if window.messages >= self.config.max_records:
                self._seal(window)

    def _seal_due(self) -> None:
        deadline = time.monotonic() - self.config.window_ms / 1000
        for window in list(self._windows.values()):
            if window.messages and window.opened <= deadline:
                self._seal(window)

    def _seal(self, window: Window) -> None:
        cfg = self.config
        batch = window.batch(cfg.institution, self.topic)
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
        self._windows[window.partition] = window.following()
        self._sealed.set()

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Batch until ``stop`` is set (the committer runs in a thread beside)."""
        self.prepare()
        committer = threading.Thread(target=self.committer.run, args=(stop,), name="committer")
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
