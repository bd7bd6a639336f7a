"""Reading the four ledger logs of an audit run into :class:`ledger.audit.ChainAudit`: end
offsets in causal order, truncation, each message to its handler (the transactions through
the signature pipeline when there is one), and the progress bar."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ledger.audit import ChainAudit
from ledger.audit_findings import ERROR, Finding
from ledger.genesis import Genesis
from readers.audit_config import AuditConfig, AuditError
from readers.audit_report import AuditReport
from runtime.kafka_config import consumer_config
from streams.signature_pipeline import SignaturePipeline

if TYPE_CHECKING:
    from readers.audit_projection import ExpectedRows, ProjectionSnapshot

TOPICS = ("receipts", "blocks", "votes", "tx")  # end offsets are taken in this order


class Progress:
    """A one-line progress bar on a terminal (throttled to 5 updates a second)."""

    def __init__(self, enabled: bool, stream: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._last = 0.0

    def update(self, stage: str, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        frac = done / total if total else 1.0
        bar = "#" * int(30 * frac)
        self.stream.write(f"\r{stage:<9}[{bar:<30}] {100 * frac:5.1f}% {done:,}/{total:,}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _consumer(config: AuditConfig) -> Consumer:
    return Consumer(
        consumer_config(
            config.bootstrap,
            f"audit-{uuid.uuid4().hex[:12]}",
            **{
                "fetch.max.bytes": 64 << 20,
                "max.partition.fetch.bytes": 16 << 20,
                "fetch.wait.max.ms": 10,
                "queued.min.messages": 500_000,
            },
        )
    )


def _read(
    consumer: Consumer,
    topic: str,
    span: tuple[int, int],
    on_message: Callable[[int, int, bytes], bool],
    *,
    progress: Callable[[int], None],
    timeout: float,
) -> int:
    """Feed messages ``[start, end)`` of partition 0 (``consumer`` is assigned there already);
    stops early when ``on_message`` says False. Returns the last offset fed."""
    start, end = span
    last = start - 1
    idle_since = time.monotonic()
    while last < end - 1:
        batch = consumer.consume(num_messages=10000, timeout=0.2)
        if not batch:
            if time.monotonic() - idle_since > timeout:
                raise AuditError(f"{topic}: no message for {timeout:.0f}s at offset {last + 1}")
            continue
        idle_since = time.monotonic()
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AuditError(f"reading {topic}: {err}")
            offset = msg.offset()
            assert offset is not None
            if offset >= end:
                return last
            last = offset
            if not on_message(offset, msg.timestamp()[1], msg.value() or b""):
                return last
        progress(last + 1)
    return last


def replay_logs(  # noqa: PLR0917 (the run's parts, in the order run_audit has them)
    config: AuditConfig,
    audit: ChainAudit,
    genesis: Genesis,
    topics: dict[str, str],
    report: AuditReport,
    pipeline: SignaturePipeline | None,
    snapshot: ProjectionSnapshot | None,
    iam: Any,
) -> tuple[ExpectedRows | None, dict[int, bytes]]:
    """Take the logs' end offsets in causal order and read them into ``audit``; returns the
    projector's expected rows (with a projection) and the raw block copies it needs."""
    consumers: dict[str, Consumer] = {}
    progress = Progress(config.progress)
    expected = None
    block_messages: dict[int, bytes] = {}
    try:
        ends = _end_offsets(config, topics, consumers)
        starts = {"tx": audit.tx_offset, "votes": audit.votes_offset, "blocks": 0, "receipts": 0}
        for name, consumer in consumers.items():  # every log prefetches from now on
            if starts[name] < ends[name][1]:
                consumer.assign([TopicPartition(topics[name], 0, starts[name])])
        _check_truncation(audit, topics, starts, ends)
        if snapshot is not None and config.institution is not None:
            from readers import audit_projection as ap  # noqa: PLC0415

            expected = ap.ExpectedRows(genesis, audit.machine, snapshot.height)
            audit.on_block = expected
        if iam is not None:
            iam.watch(audit, genesis)  # key history from the certified blocks replayed
        wanted_blocks = set(snapshot.pending_blocks) if snapshot else set()
        handlers = _handlers(audit, pipeline, wanted_blocks, block_messages)
        if pipeline is not None:
            pipeline.wait_ready(config.timeout)
        replay_clock = time.monotonic()
        for name in ("blocks", "votes", "tx", "receipts"):
            start, end = starts[name], ends[name][1]

            def show_progress(done: int, name: str = name, end: int = end) -> None:
                progress.update(name, done, end)

            last = _read(
                consumers[name],
                topics[name],
                (start, end),
                handlers[name],
                progress=show_progress,
                timeout=config.timeout,
            )
            if name == "tx" and pipeline is not None:
                pipeline.flush()
                last = audit.last_tx_offset  # below ``last`` if the replay stopped at a height
                report.signature_wait = pipeline.waited
            progress.update(name, last + 1, end, force=True)
            report.log_ranges[topics[name]] = (start, last + 1)
            if name == "tx":
                report.replay_seconds = time.monotonic() - replay_clock
        progress.close()
    finally:
        if pipeline is not None:
            pipeline.close()
        for consumer in consumers.values():
            consumer.close()
    return expected, block_messages


def _end_offsets(
    config: AuditConfig, topics: dict[str, str], consumers: dict[str, Consumer]
) -> dict[str, tuple[int, int]]:
    """Each log's (low, end) offsets, taken in :data:`TOPICS` order; ``consumers`` gets one
    consumer per log (the caller closes them)."""
    ends: dict[str, tuple[int, int]] = {}
    for name in TOPICS:
        consumers[name] = _consumer(config)
        try:
            ends[name] = consumers[name].get_watermark_offsets(
                TopicPartition(topics[name], 0), timeout=config.timeout, cached=False
            )
        except KafkaException as exc:
            why = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc
            raise AuditError(
                f"cannot reach the broker at {config.bootstrap} ({topics[name]}): {why}; is "
                "Kafka up, and is --bootstrap right?"
            ) from exc
    return ends


def _check_truncation(
    audit: ChainAudit,
    topics: dict[str, str],
    starts: dict[str, int],
    ends: dict[str, tuple[int, int]],
) -> None:
    """A log whose first offset is past where the replay starts lost messages."""
    for name, (low, _) in ends.items():
        if low > starts[name]:
            audit.findings.add(
                Finding(
                    check="log",
                    kind="log.truncated",
                    severity=ERROR,
                    message=f"{topics[name]} starts at offset {low}: messages before it are "
                    "gone (ledger topics keep data forever)",
                    topic=topics[name],
                    offset=low,
                )
            )


def _handlers(
    audit: ChainAudit,
    pipeline: SignaturePipeline | None,
    wanted_blocks: set[int],
    block_messages: dict[int, bytes],
) -> dict[str, Callable[[int, int, bytes], bool]]:
    """What each log's messages are fed to (False: stop reading that log)."""

    def on_block(offset: int, _ts: int, raw: bytes) -> bool:
        audit.add_block_copy(offset, raw)
        if offset in wanted_blocks:
            block_messages[offset] = raw
        return True

    def on_vote(offset: int, _ts: int, raw: bytes) -> bool:
        audit.add_vote(offset, raw)
        return True

    def on_tx(offset: int, ts: int, raw: bytes) -> bool:
        if pipeline is None:
            audit.feed_tx(offset, ts, raw)
        else:  # fed to the audit in order once a worker has checked its signature
            pipeline.add(offset, ts, raw)
        return not audit.done

    def on_receipt(offset: int, _ts: int, raw: bytes) -> bool:
        audit.feed_receipt(offset, raw)
        return True

    return {"blocks": on_block, "votes": on_vote, "tx": on_tx, "receipts": on_receipt}
