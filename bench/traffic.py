"""What the broker stored per topic: messages (end offsets) and bytes (log segment sizes).

``python -m bench.consensus`` takes one :func:`topic_traffic` before its burst and one after
its paced run and prints the difference per finalized transaction (D47): the Kafka messages
and bytes each transaction costs, by topic (``tx``, ``votes``, ``blocks``, ``receipts`` of the
case's prefix, and ``__consumer_offsets`` for the advisory group offsets of D36).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from runtime.kafka_config import consumer_config

OFFSETS_TOPIC = "__consumer_offsets"


@dataclass(frozen=True, slots=True)
class Traffic:
    """Messages and bytes stored in one topic."""

    messages: int
    bytes: int


def _partitions(data_dirs: Sequence[Path], topic: str) -> list[tuple[int, Path]]:
    """``(partition, directory)`` of every partition of ``topic`` in the brokers' data dirs."""
    found: list[tuple[int, Path]] = []
    for data in data_dirs:
        for path in data.glob(f"{topic}-*"):
            head, _, part = path.name.rpartition("-")
            if head == topic and part.isdigit():
                found.append((int(part), path))
    return found


def topic_traffic(
    bootstrap: str, data_dirs: Sequence[Path], prefix: str, suffixes: Sequence[str]
) -> dict[str, Traffic]:
    """Messages and bytes now stored in each ``prefix + suffix`` topic and in the consumer
    offsets topic (keyed by suffix, and by :data:`OFFSETS_TOPIC`). Bytes are the sizes of the
    log segments on disk (one replica); messages are end offsets summed over partitions."""
    consumer = Consumer(consumer_config(bootstrap, "bench-traffic"))
    try:
        out: dict[str, Traffic] = {}
        for name, topic in [*((s, prefix + s) for s in suffixes), (OFFSETS_TOPIC, OFFSETS_TOPIC)]:
            messages = size = 0
            for part, path in _partitions(data_dirs, topic):
                size += sum(f.stat().st_size for f in path.glob("*.log"))
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
                messages += max(0, high)
            out[name] = Traffic(messages, size)
        return out
    finally:
        consumer.close()


def per_tx(before: dict[str, Traffic], after: dict[str, Traffic], txs: int) -> str:
    """One line: messages and bytes per transaction by topic, and their totals."""
    parts: list[str] = []
    total_m = total_b = 0.0
    for name, end in after.items():
        start = before.get(name, Traffic(0, 0))
        m = (end.messages - start.messages) / txs
        b = (end.bytes - start.bytes) / txs
        total_m, total_b = total_m + m, total_b + b
        parts.append(f"{name} {m:.2f} / {b:,.0f} B")
    return f"total {total_m:.2f} msgs / {total_b:,.0f} B; " + ", ".join(parts)
