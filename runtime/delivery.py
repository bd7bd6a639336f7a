"""Producing messages and waiting for the broker's answer to each (delivery reports)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, Message, Producer


def produce_flushed(
    producer: Producer, topic: str, messages: Iterable[tuple[bytes, bytes]], timeout_s: float
) -> tuple[list[Message], list[KafkaError]]:
    """Produce each ``(key, value)`` to ``topic`` and flush for at most ``timeout_s``: the
    messages the broker acknowledged and the errors it reported. A message in neither list
    was still queued at the timeout (it may land later). ``produce`` may raise
    ``BufferError`` or ``KafkaException``; the caller decides what that means."""
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        (errors.append(err) if err is not None else delivered.append(msg))

    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    producer.flush(timeout_s)
    return delivered, errors


def close_producer(producer: Producer, timeout_s: float) -> int:
    """Flush for at most ``timeout_s``, drop what is still queued and destroy the client now,
    closing its connections; the number of messages dropped. A producer that is only flushed
    lives on until the garbage collector takes it, and meanwhile reconnects to a broker that
    stopped and logs every refused connection on stderr (D71). Safe to call twice."""
    try:
        left = producer.flush(timeout_s)
    except RuntimeError:  # closed already
        return 0
    if left:
        producer.purge()
        producer.poll(0)  # the purged messages report their failure
    producer.close()
    return left
