"""Client configuration shared by every Kafka producer and consumer of Pantheon.

Producers are idempotent with ``acks=all`` (DESIGN.md section 3): a retried send is never
written twice and an acknowledged message is on every in-sync replica. Consumers never
auto-commit: a consumer's position is stored with the work it did (projections) or
derived from the log (validators).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Message

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest record a Pantheon producer sends; the broker accepts up to twice this."""


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """An idempotent, ``acks=all`` producer that keeps per-partition order on retries."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "message.max.bytes": MAX_MESSAGE_BYTES + 64 * 1024,
        "linger.ms": 5,
        "compression.type": "lz4",
        "log_level": 3,
    }
    config.update(overrides)
    return config


def consumer_config(bootstrap_servers: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that reads only committed data, from the start, without auto-commit."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        # Long polling: the broker answers a fetch as soon as one byte is there, so the wait
        # only bounds how often an idle consumer asks again. Short waits cost the broker
        # about a millisecond of CPU per empty fetch (4 idle validators polling every 20 ms
        # kept it at 45% of a core, measured with bench.consensus's CPU accounting).
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 500,
        "log_level": 3,
    }
    config.update(overrides)
    return config


def consume_ready(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages`` messages: those already fetched at once, else the first to come
    within ``timeout`` and whatever has arrived with it.

    ``Consumer.consume(n, timeout)`` waits until ``n`` messages are there or the timeout ends,
    so under a steady trickle every batch waited the full timeout (a projector 3 to 5 blocks
    behind finality at half the consensus benchmark's load); catching up still gets full
    batches, from what librdkafka has prefetched.
    """
    ready = consumer.consume(num_messages=max_messages, timeout=0)
    if ready:
        return ready
    first = consumer.consume(num_messages=1, timeout=timeout)
    if not first or max_messages == 1:
        return first
    return first + consumer.consume(num_messages=max_messages - 1, timeout=0)


def admin_config(bootstrap_servers: str) -> dict[str, Any]:
    """An admin client."""
    return {"bootstrap.servers": bootstrap_servers, "log_level": 3}
