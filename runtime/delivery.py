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
